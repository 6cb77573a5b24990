"""Per-image Pascal-VOC-style XML annotations -> the CSV the image-folder dataset reads (docs/datasets.md#image-folders).

One XML file per image (``<annotation><filename>..</filename><object><name>reye</name><bndbox>
<xmin/><ymin/><xmax/><ymax/></bndbox></object>..</annotation>``, plus any extra elements) becomes one
CSV row: ``file`` from ``<filename>``; box columns ``NAME_xmin, NAME_ymin, NAME_xmax, NAME_ymax`` from
each ``<object>``'s name and bndbox (values copied as written, in the XML's units: XYS boxes are at
twice the image resolution, so load with ``box_scale=2``); one column per requested factor, read from
an element path (ElementTree's path syntax, relative to the root element, e.g. ``data/head/x``) as
written, or the exact decimal sum of several numeric paths (Near32/PYTORCH_VAE's XYS gaze factor = gaze
position + camera-screen-centre offset, ``datasetXYS.py``).

Rules (each breach is one :class:`VaelabError` line naming the XML file):
- a path must match exactly one element, with text; summed paths must hold finite numbers;
- two ``<object>`` elements with the same name in one file are refused (which box would it be?);
- every box used must be in every file: a box name missing from some files is an error that names
  the first such file -- choose the boxes to import (``boxes=["reye", "leye"]``, ``--boxes``) or none;
- a file without ``<filename>`` (or with an empty one) uses its own path under the annotations folder
  without ``.xml`` (Near32/PYTORCH_VAE's images and annotations share their stems); two files naming the same
  image are refused.
"""
from __future__ import annotations

import csv
import io
import os
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Mapping, Sequence

from ..errors import VaelabError, closest

DEFAULT_CSV = "factors.csv"  # the first name the image-folder dataset looks for (images._CSV_NAMES)
BOX_FIELDS = ("xmin", "ymin", "xmax", "ymax")  # VOC bndbox (same order as images.BOX_FIELDS)
_RESERVED = ("file", "filename", "path")  # image-folder's file-column names
_BOX_COLUMN = re.compile(r"^(.+)_(xmin|ymin|xmax|ymax)$")  # such columns are boxes, never factors
FULL = "full"  # the stack rule's whole image; a box of that name could never be stacked

# Near32/PYTORCH_VAE's XYS-latent annotations, as its datasetXYS.py reads them:
# <data><gaze_position><x/><y/></gaze_position><camera_screen_center_offset><x/><y/><fov/></...>
# <head><head_camera_distance/>...</head></data>; gaze = gaze_position + camera_screen_center_offset
# (its __getitem__), the S factor = head_camera_distance; objects face, reye, leye (boxes at twice the
# image resolution: box_scale 2, its divide2=True). The parser there matches tags by substring; these
# are the full tag names it was written for. A real file that differs fails with the path named:
# override one entry with --factor / --sum of the same name.
XYS_FACTORS: dict[str, str | list[str]] = {
    "gaze_x": ["data/gaze_position/x", "data/camera_screen_center_offset/x"],
    "gaze_y": ["data/gaze_position/y", "data/camera_screen_center_offset/y"],
    "head_camera_distance": "data/head/head_camera_distance",
}
PRESETS: dict[str, dict[str, str | list[str]]] = {"xys": XYS_FACTORS}


@dataclass
class Column:
    """One factor column: a single element path (text kept as written) or a numeric sum of paths."""

    name: str
    paths: list[str]
    numeric: bool  # True: every path a finite number, the column their exact decimal sum

    def describe(self) -> str:
        return "+".join(self.paths) if self.numeric and len(self.paths) > 1 else self.paths[0]


@dataclass
class VocTable:
    """What :func:`read_voc` found: one row per XML file (sorted by path)."""

    annotations: Path
    xml_files: list[str]  # relative posix paths under ``annotations``
    files: list[str]  # the ``file`` column
    factor_names: list[str]
    factor_values: dict[str, list[str]]
    box_names: list[str]  # sorted
    boxes: dict[str, list[list[str]]] = field(default_factory=dict)  # name -> per row [xmin, ymin, xmax, ymax]

    @property
    def columns(self) -> list[str]:
        return ["file"] + self.factor_names + [f"{b}_{f}" for b in self.box_names for f in BOX_FIELDS]

    def csv_text(self) -> str:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(self.columns)
        for i, f in enumerate(self.files):
            w.writerow([f] + [self.factor_values[n][i] for n in self.factor_names]
                       + [v for b in self.box_names for v in self.boxes[b][i]])
        return buf.getvalue()

    def write(self, out: str | os.PathLike, force: bool = False) -> Path:
        from .prepare import atomic_write_bytes

        out = Path(out)
        if out.is_dir():
            raise VaelabError(f"{out} is a folder: give the CSV file to write (e.g. {out / DEFAULT_CSV})")
        if out.exists() and not force:
            raise VaelabError(f"{out} exists; pass --force (force=True) to overwrite it")
        try:
            atomic_write_bytes(out, self.csv_text().encode("utf-8"))
        except OSError as e:
            raise VaelabError(f"cannot write {out}: {e}") from None
        return out


# ------------------------------------------------------------------------------------------ columns
def _check_name(name, what: str) -> str:
    if not isinstance(name, str) or not name.strip() or name != name.strip():
        raise VaelabError(f"{what} name {name!r} must be a non-empty name without surrounding spaces")
    if name.lower() in _RESERVED:
        raise VaelabError(f"{what} name {name!r} is taken by the image-folder CSV's file column; pick another")
    if _BOX_COLUMN.match(name):
        raise VaelabError(f"{what} name {name!r} ends in _xmin/_ymin/_xmax/_ymax, which the image-folder reads "
                          f"as a box corner, never a factor; pick another name")
    return name


def _check_path(path, name: str) -> str:
    if not isinstance(path, str) or not path.strip():
        raise VaelabError(f"factor {name!r}: element path {path!r} must be a non-empty string such as 'data/x'")
    path = path.strip()
    try:
        ET.Element("annotation").findall(_relative(path))
    except (SyntaxError, KeyError, TypeError, ValueError) as e:
        why = f" ({e})" if isinstance(e, SyntaxError) and str(e) else ""
        raise VaelabError(f"factor {name!r}: bad element path {path!r}{why}; use tags separated by '/', "
                          f"e.g. data/gaze_position/x") from None
    return path


def _relative(path: str) -> str:
    """An ElementTree path relative to the root element ('/a/b' -> 'a/b', '//b' -> './/b')."""
    if path.startswith("//"):
        return ".//" + path[2:]
    return path.lstrip("/")


def parse_columns(factors: Mapping[str, str | Sequence[str]] | None = None,
                  sums: Mapping[str, str | Sequence[str]] | None = None,
                  preset: str | None = None) -> list[Column]:
    """Checked factor columns: the preset's (if any) first, then ``factors``, then ``sums``; a later entry
    with an earlier one's name replaces it in place. In ``factors`` a string is one path (its text kept)
    and a list of paths is a numeric sum; in ``sums`` a value is ``"P+P"`` or a list of paths."""
    spec: dict[str, str | list[str]] = {}
    if preset is not None:
        if preset not in PRESETS:
            raise VaelabError(f"unknown VOC import preset {preset!r}{closest(str(preset), PRESETS)}; "
                              f"known: {', '.join(PRESETS)}")
        spec.update(PRESETS[preset])
    for what, mapping in (("factors", factors), ("sums", sums)):
        if mapping is None:
            continue
        if not isinstance(mapping, Mapping):
            raise VaelabError(f"{what} must map factor names to element paths, got {type(mapping).__name__}")
        for name, value in mapping.items():
            if what == "sums":
                parts = value.split("+") if isinstance(value, str) else value
                if isinstance(parts, str) or not isinstance(parts, Sequence):
                    raise VaelabError(f"sum {name!r}: give 'PATH+PATH' or a list of paths, got {value!r}")
                value = list(parts)
            elif not isinstance(value, str):
                if not isinstance(value, Sequence):
                    raise VaelabError(f"factor {name!r}: give an element path or a list of paths to sum, "
                                      f"got {value!r}")
                value = list(value)
            spec[name] = value
    cols = []
    for name, value in spec.items():
        _check_name(name, "factor")
        if isinstance(value, str):
            cols.append(Column(name, [_check_path(value, name)], numeric=False))
        else:
            if not value:
                raise VaelabError(f"sum {name!r} has no paths; give PATH+PATH")
            cols.append(Column(name, [_check_path(p, name) for p in value], numeric=True))
    return cols


# ------------------------------------------------------------------------------------------ reading
def find_xml(annotations: str | os.PathLike) -> list[str]:
    """Sorted relative posix paths of the ``*.xml`` files under ``annotations`` (recursive, hidden skipped)."""
    base = Path(annotations)
    if not base.exists():
        raise VaelabError(f"no annotations folder at {base}")
    if not base.is_dir():
        raise VaelabError(f"{base} is not a folder: give the folder that holds the per-image .xml files")
    out = []
    for dirpath, dirnames, filenames in os.walk(base):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        rel = Path(dirpath).relative_to(base).as_posix()
        for f in filenames:
            if f.lower().endswith(".xml") and not f.startswith("."):
                out.append(f if rel == "." else f"{rel}/{f}")
    if not out:
        raise VaelabError(f"no .xml files found in {base} (searched its subfolders too); give the folder "
                          f"of per-image VOC-style annotations")
    return sorted(out)


def _parse(path: Path) -> ET.Element:
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as e:
        raise VaelabError(f"{path}: not well-formed XML ({e})") from None
    except OSError as e:
        raise VaelabError(f"cannot read {path}: {e}") from None
    for el in root.iter():  # drop namespaces: paths name plain tags
        if isinstance(el.tag, str) and el.tag.startswith("{"):
            el.tag = el.tag.split("}", 1)[1]
    return root


def _lookup(root: ET.Element, path: str, xml: Path, name: str) -> str:
    """The stripped text of the one element at ``path``."""
    rel = _relative(path)
    found = root.findall(rel)
    if not found:
        first, _, rest = rel.partition("/")
        if first == root.tag and rest:  # 'annotation/data/x' written from the document's top
            found = root.findall(rest)
    if not found:
        raise VaelabError(f"{xml}: no element {path} (factor {name!r}; paths start below the root "
                          f"<{root.tag}>)")
    if len(found) > 1:
        raise VaelabError(f"{xml}: {path} matches {len(found)} elements (factor {name!r}); make it select "
                          f"one, e.g. {path}[1]")
    text = (found[0].text or "").strip()
    if not text:
        raise VaelabError(f"{xml}: element {path} (factor {name!r}) has no value")
    return text


def _number(text: str, xml: Path, what: str) -> Decimal:
    try:
        v = Decimal(text)
    except InvalidOperation:
        v = None
    if v is None or not v.is_finite():
        raise VaelabError(f"{xml}: {what} is {text!r}, not a finite number")
    return v


def _decimal_text(v: Decimal) -> str:
    """A plain decimal string ('0.3', '-1.25', '120'), never '1E+2'."""
    return format(abs(v) if v.is_zero() else v, "f")


def _objects(root: ET.Element, xml: Path, wanted: set[str] | None) -> dict[str, list[str]]:
    """{object name: [xmin, ymin, xmax, ymax] texts} of this file's objects (those in ``wanted``, or all)."""
    out: dict[str, list[str]] = {}
    for k, obj in enumerate(root.findall("object")):
        name = (obj.findtext("name") or "").strip()
        if not name:
            raise VaelabError(f"{xml}: <object> number {k + 1} has no <name>")
        if wanted is not None and name not in wanted:
            continue
        if name in out:
            raise VaelabError(f"{xml}: two <object> elements are named {name!r}; one box per name and image "
                              f"(choose other boxes with --boxes / boxes=[...], or none with --no-boxes)")
        if name == FULL:
            raise VaelabError(f"{xml}: an object is named {FULL!r}, which a stack rule reads as the whole "
                              f"image; leave it out with --boxes / boxes=[...]")
        box = obj.find("bndbox")
        if box is None:
            raise VaelabError(f"{xml}: object {name!r} has no <bndbox>")
        vals = []
        for f in BOX_FIELDS:
            t = (box.findtext(f) or "").strip()
            if not t:
                raise VaelabError(f"{xml}: object {name!r} has no bndbox/{f}")
            _number(t, xml, f"{name} bndbox/{f}")
            vals.append(t)
        x0, y0, x1, y1 = (float(v) for v in vals)
        if not (x1 > x0 and y1 > y0):
            raise VaelabError(f"{xml}: box {name!r} is empty (xmin {vals[0]}, ymin {vals[1]}, xmax {vals[2]}, "
                              f"ymax {vals[3]}); xmax must exceed xmin and ymax exceed ymin")
        out[name] = vals
    return out


def read_voc(annotations: str | os.PathLike, *, factors: Mapping[str, str | Sequence[str]] | None = None,
             sums: Mapping[str, str | Sequence[str]] | None = None, boxes: Sequence[str] | str | None = None,
             preset: str | None = None) -> VocTable:
    """Read every ``*.xml`` under ``annotations`` (see the module text for the rules) into a table.

    boxes: None = every object name found (each must be in every file); a list (or "a,b") = those
    boxes only, other objects ignored; [] = no box columns."""
    from .prepare import progress

    base = Path(annotations)
    cols = parse_columns(factors, sums, preset)
    if isinstance(boxes, str):
        boxes = [b.strip() for b in boxes.split(",") if b.strip()]
    wanted = None if boxes is None else list(dict.fromkeys(boxes))
    if wanted is not None:
        for b in wanted:
            if not isinstance(b, str) or not b or b == FULL:
                raise VaelabError(f"box name {b!r} cannot be imported ('{FULL}' is the stack rule's whole image)")
    rel_paths = find_xml(base)
    files: list[str] = []
    values: dict[str, list[str]] = {c.name: [] for c in cols}
    found: list[dict[str, list[str]]] = []
    seen: dict[str, str] = {}
    for rel in progress(rel_paths, desc="reading annotations", unit="file"):
        xml = base / rel
        root = _parse(xml)
        fname = (root.findtext("filename") or "").strip()
        if not fname:
            hits = root.findall(".//filename")
            fname = (hits[0].text or "").strip() if len(hits) == 1 else ""
        if not fname:
            fname = rel[:-4]  # 'a/b.xml' -> 'a/b': image-folder matches a name without extension by its stem
        fname = fname.replace("\\", "/")
        if fname in seen:
            raise VaelabError(f"{xml}: names image {fname!r}, as {base / seen[fname]} does; one annotation "
                              f"per image")
        seen[fname] = rel
        files.append(fname)
        for c in cols:
            if c.numeric:
                total = sum((_number(_lookup(root, p, xml, c.name), xml, f"{p} (factor {c.name!r})")
                             for p in c.paths), Decimal(0))
                values[c.name].append(_decimal_text(total))
            else:
                values[c.name].append(_lookup(root, c.paths[0], xml, c.name))
        found.append(_objects(root, xml, None if wanted is None else set(wanted)))
    names = sorted({n for f in found for n in f}) if wanted is None else sorted(wanted)
    box_values: dict[str, list[list[str]]] = {}
    for n in names:
        missing = [i for i, f in enumerate(found) if n not in f]
        if missing:
            i = missing[0]
            how = ("choose the boxes to import with --boxes / boxes=[...] (or none: --no-boxes)" if wanted is None
                   else "every chosen box must be in every file")
            raise VaelabError(f"{base / rel_paths[i]}: no <object> named {n!r} ({len(missing):,} of "
                              f"{len(found):,} files lack it); {how}")
        box_values[n] = [f[n] for f in found]
    return VocTable(annotations=base, xml_files=rel_paths, files=files, factor_names=[c.name for c in cols],
                    factor_values=values, box_names=names, boxes=box_values)


def default_csv(annotations: str | os.PathLike, images: str | os.PathLike | None = None) -> Path:
    """Where the CSV goes by default: ``factors.csv`` in the image folder (given, else the annotations
    folder), the first name the image-folder dataset looks for there."""
    return Path(images if images is not None else annotations) / DEFAULT_CSV


def import_voc(annotations: str | os.PathLike, out: str | os.PathLike | None = None, *,
               images: str | os.PathLike | None = None, factors: Mapping[str, str | Sequence[str]] | None = None,
               sums: Mapping[str, str | Sequence[str]] | None = None, boxes: Sequence[str] | str | None = None,
               preset: str | None = None, force: bool = False) -> Path:
    """Write the image-folder CSV for a folder of per-image VOC-style XML files; returns its path.

    annotations: folder searched recursively for ``*.xml``. out: the CSV (default ``factors.csv`` in
    ``images``, else in ``annotations``; an existing file needs ``force=True``). images: the image
    folder the CSV is for (Near32/PYTORCH_VAE keeps ``annotations/`` and ``images/`` apart). factors: name ->
    element path (text as written) or list of paths (numeric sum); sums: name -> "P+P" or list of
    paths; preset "xys": Near32/PYTORCH_VAE's gaze_x, gaze_y (gaze + camera-screen-centre offset) and
    head_camera_distance. boxes: see :func:`read_voc`.

    XYS: ``import_voc("dataset-XYS-latent/annotations", images="dataset-XYS-latent/images",
    preset="xys")``, then ``load("image-folder", root="dataset-XYS-latent/images", size=256,
    stack="full,reye,leye", box_scale=2)``."""
    if images is not None and not Path(images).is_dir():
        raise VaelabError(f"no image folder at {images}")
    table = read_voc(annotations, factors=factors, sums=sums, boxes=boxes, preset=preset)
    return table.write(default_csv(annotations, images) if out is None else out, force=force)


__all__ = ["DEFAULT_CSV", "PRESETS", "XYS_FACTORS", "Column", "VocTable", "default_csv", "find_xml",
           "import_voc", "parse_columns", "read_voc"]
