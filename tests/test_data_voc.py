"""Per-image VOC-style XML -> image-folder CSV (docs/datasets.md#image-folders; Near32/PYTORCH_VAE's XYS annotations, datasetXYS.py).

Synthetic 40 x 30 PNGs in images/ and one XYS-shaped XML per image in annotations/ (file names
without ".png", boxes at twice the image resolution, gaze = gaze_position + camera_screen_center_offset).
After the import the image-folder loads the folder with the XYS stack; every number is hand-checkable.
"""
from __future__ import annotations

import csv
import warnings

import numpy as np
import pytest
from PIL import Image

from vaelab.data import load
from vaelab.data.prepare import DataWarning
from vaelab.data.voc import XYS_FACTORS, import_voc, read_voc
from vaelab.errors import VaelabError

W, H = 40, 30
LEYE_RGB = (20, 140, 230)


def _image(i: int) -> np.ndarray:
    """Background grey 200; right eye x 4+i..11+i, y 6..13 grey 30+i; left eye x 24..33, y 8..15 LEYE_RGB."""
    a = np.full((H, W, 3), 200, np.uint8)
    a[6:14, 4 + i:12 + i] = 30 + i
    a[8:16, 24:34] = LEYE_RGB
    return a


def _box(name, x0, y0, x1, y1) -> str:
    return (f"<object><name>{name}</name><pose>Unspecified</pose><bndbox><xmin>{x0}</xmin><ymin>{y0}</ymin>"
            f"<xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox></object>")


def _xml(i: int, *, gaze_x=None, offset_x="0.2", objects=None, extra="", filename=None) -> str:
    """XYS-shaped annotation of image i: gaze x 0.1 i (+ offset 0.2), gaze y 1.5 / 2.5 (+ offset -0.5),
    head-camera distance 40 / 50; boxes (pixels x 2) face, reye (over the grey eye), leye."""
    gx = f"{0.1 * i:.1f}" if gaze_x is None else gaze_x
    gy = "1.5" if i < 2 else "2.5"
    off = "" if offset_x is None else f"<x>{offset_x}</x>"
    objects = objects if objects is not None else [
        _box("face", 2, 2, 78, 58), _box("reye", 2 * (4 + i), 12, 2 * (12 + i), 28), _box("leye", 48, 16, 68, 32)]
    fname = f"img{i}" if filename is None else filename
    return (f"<annotation><folder>images</folder><filename>{fname}</filename>"
            f"<size><width>{2 * W}</width><height>{2 * H}</height><depth>3</depth></size>"
            f"<data><model>m{i % 2}</model><gaze_position><x>{gx}</x><y>{gy}</y></gaze_position>"
            f"<screen_size><width>0.2</width><height>0.2</height></screen_size>"
            f"<camera_screen_center_offset>{off}<y>-0.5</y><fov>4.1</fov></camera_screen_center_offset>"
            f"<head><head_camera_distance>{40 + 10 * (i % 2)}</head_camera_distance>"
            f"<head_roll>0.0</head_roll></head></data>{''.join(objects)}{extra}</annotation>")


def _xys(d, n=4, edit=None):
    """d/images/img{i}.png and d/annotations/img{i}.xml; edit(i) -> keyword overrides for _xml, or a str."""
    (d / "images").mkdir(parents=True, exist_ok=True)
    (d / "annotations").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(_image(i)).save(d / "images" / f"img{i}.png")
        e = edit(i) if edit else None
        text = e if isinstance(e, str) else _xml(i, **(e or {}))
        (d / "annotations" / f"img{i}.xml").write_text(text)
    return d


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_xys_import_then_stacked_load(tmp_path, data_home):
    d = _xys(tmp_path / "xys")
    out = import_voc(d / "annotations", images=d / "images", preset="xys")
    assert out == d / "images" / "factors.csv"  # where image-folder looks first
    rows = _rows(out)
    assert list(rows[0]) == ["file", "gaze_x", "gaze_y", "head_camera_distance",
                             "face_xmin", "face_ymin", "face_xmax", "face_ymax", "leye_xmin", "leye_ymin",
                             "leye_xmax", "leye_ymax", "reye_xmin", "reye_ymin", "reye_xmax", "reye_ymax"]
    assert [r["file"] for r in rows] == ["img0", "img1", "img2", "img3"]
    assert [r["gaze_x"] for r in rows] == ["0.2", "0.3", "0.4", "0.5"]  # exact decimal sums, no 0.30000000000000004
    assert [r["gaze_y"] for r in rows] == ["1.0", "1.0", "2.0", "2.0"]
    assert [r["head_camera_distance"] for r in rows] == ["40", "50", "40", "50"]
    assert [r["reye_xmin"] for r in rows] == ["8", "10", "12", "14"]  # copied as written

    ds = load("image-folder", root=d / "images", size=16, stack="full,reye,leye", box_scale=2)
    assert tuple(ds.images.shape) == (4, 3, 16, 16)
    assert ds.factor_names == ["gaze_x", "gaze_y", "head_camera_distance"]
    assert ds.factor_sizes == [4, 2, 2]
    np.testing.assert_allclose(ds.factor_values[0], [0.2, 0.3, 0.4, 0.5])
    np.testing.assert_allclose(ds.factor_values[1], [1.0, 2.0])
    np.testing.assert_allclose(ds.factor_values[2], [40, 50])
    np.testing.assert_array_equal(ds.factors.numpy(), [[0, 0, 0], [1, 0, 1], [2, 1, 0], [3, 1, 1]])
    grey_leye = round(0.299 * LEYE_RGB[0] + 0.587 * LEYE_RGB[1] + 0.114 * LEYE_RGB[2])
    for i in range(4):
        assert (ds.images[i, 1] == 30 + i).all(), f"right eye of image {i}"
        assert (abs(ds.images[i, 2].int() - grey_leye) <= 1).all(), f"left eye of image {i}"
    assert ds.meta["files"] == ["img0.png", "img1.png", "img2.png", "img3.png"]
    # the eye box in colour: its RGB channels are the colour painted there
    rgb = load("image-folder", root=d / "images", size=8, stack="leye:rgb", box_scale=2)
    assert [int(rgb.images[3, c].unique().item()) for c in range(3)] == list(LEYE_RGB)


def test_general_paths_text_factors_box_choice_and_fallbacks(tmp_path, data_home):
    """Any paths: text kept as a categorical factor; a root-prefixed path; namespaces dropped; --boxes
    chooses the boxes (others ignored, even when repeated); no <filename> = the XML's own stem; subfolders."""
    d = tmp_path / "voc"
    (d / "ann" / "sub").mkdir(parents=True)
    (d / "img").mkdir()
    for i in range(3):
        Image.fromarray(_image(i)).save(d / "img" / f"p{i}.png")
    twice = [_box("reye", 8, 12, 24, 28), _box("leye", 48, 16, 68, 32), _box("hand", 1, 1, 3, 3),
             _box("hand", 4, 4, 6, 6)]
    (d / "ann" / "p0.xml").write_text(_xml(0, filename="p0.png", objects=twice))
    (d / "ann" / "p1.xml").write_text(_xml(1, filename="", objects=twice).replace(
        "<annotation>", '<annotation xmlns="http://example.org/voc">'))
    (d / "ann" / "sub" / "p2.xml").write_text(_xml(2, filename="p2", objects=twice[:2]))
    t = read_voc(d / "ann", factors={"model": "annotation/data/model", "dist": "/annotation/data/head/head_roll",
                                     "s": "data/head/head_camera_distance"},
                 sums={"gx": "data/gaze_position/x + data/camera_screen_center_offset/x"}, boxes="reye,leye")
    assert t.xml_files == ["p0.xml", "p1.xml", "sub/p2.xml"]
    assert t.files == ["p0.png", "p1", "p2"]  # p1's empty <filename>: its own stem
    assert t.factor_names == ["model", "dist", "s", "gx"] and t.box_names == ["leye", "reye"]
    assert t.factor_values["model"] == ["m0", "m1", "m0"] and t.factor_values["gx"] == ["0.2", "0.3", "0.4"]
    out = t.write(d / "img" / "factors.csv")
    ds = load("image-folder", root=d / "img", size=8, stack="full,reye,leye", box_scale=2)
    assert ds.factor_names == ["model", "s", "gx"]  # dist is constant (0.0 everywhere): dropped by the loader
    assert ds.meta["factor_labels"]["model"] == ["m0", "m1"] and ds.factors[:, 0].tolist() == [0, 1, 0]
    assert (ds.images[0, 1] == 30).all()  # the reye box above is image 0's eye: x 4..11, y 6..13
    # the XYS preset with one entry replaced by name, in place
    t = read_voc(d / "ann", preset="xys", factors={"gaze_y": "data/gaze_position/y"}, boxes=[])
    assert t.factor_names == list(XYS_FACTORS) and t.factor_values["gaze_y"] == ["1.5", "1.5", "2.5"]
    assert t.box_names == [] and t.columns == ["file", "gaze_x", "gaze_y", "head_camera_distance"]
    assert out.is_file()


def _bad(i, n):  # edit applied to image 2 only
    return lambda j: n if j == 2 else None


@pytest.mark.parametrize("edit, kwargs, match", [
    (_bad(2, "<annotation><filename>img2</filename><data></annotation>"), {}, r"img2\.xml: not well-formed XML"),
    (_bad(2, dict(offset_x=None)), {}, r"img2\.xml: no element data/camera_screen_center_offset/x \(factor 'gaze_x'"),
    (_bad(2, dict(gaze_x="n/a")), {}, r"img2\.xml: data/gaze_position/x \(factor 'gaze_x'\) is 'n/a', not a finite"),
    (_bad(2, dict(gaze_x="inf")), {}, "not a finite number"),
    (_bad(2, dict(gaze_x="")), {}, r"img2\.xml: element data/gaze_position/x \(factor 'gaze_x'\) has no value"),
    (_bad(2, dict(objects=[_box("reye", 8, 12, 24, 28), _box("reye", 8, 12, 24, 28), _box("leye", 48, 16, 68, 32)])),
     {}, r"img2\.xml: two <object> elements are named 'reye'"),
    (_bad(2, dict(objects=[_box("reye", 8, 12, 24, 28), _box("leye", 48, 16, 68, 32)])), {},
     r"img2\.xml: no <object> named 'face' \(1 of 4 files lack it\); choose the boxes"),
    (_bad(2, dict(objects=[_box("reye", 8, 12, 8, 28), _box("leye", 48, 16, 68, 32)])), dict(boxes=["reye", "leye"]),
     r"img2\.xml: box 'reye' is empty"),
    (_bad(2, dict(objects=[_box("reye", 8, 12, "x", 28), _box("leye", 48, 16, 68, 32)])),
     dict(boxes=["reye", "leye"]), r"img2\.xml: reye bndbox/xmax is 'x', not a finite number"),
    (_bad(2, dict(filename="img1")), {}, r"img2\.xml: names image 'img1', as .*img1\.xml does"),
    (_bad(2, dict(extra="<data><model>x</model></data>")), dict(preset=None, factors={"m": "data/model"}),
     r"img2\.xml: data/model matches 2 elements \(factor 'm'\); make it select one, e.g. data/model\[1\]"),
    (None, dict(factors={"reye_xmin": "data/model"}), "'reye_xmin' ends in _xmin"),
    (None, dict(factors={"file": "data/model"}), "taken by the image-folder CSV's file column"),
    (None, dict(factors={"m": "data/model["}), r"factor 'm': bad element path 'data/model\['"),
    (None, dict(preset="xyz"), "unknown VOC import preset 'xyz' \\(did you mean 'xys'"),
])
def test_bad_annotations_are_one_clear_line(tmp_path, data_home, edit, kwargs, match):
    d = _xys(tmp_path / "bad", edit=edit)
    kwargs = {"preset": "xys", **kwargs}
    with pytest.raises(VaelabError, match=match) as e:
        import_voc(d / "annotations", images=d / "images", **kwargs)
    assert "\n" not in str(e.value)
    assert not (d / "images" / "factors.csv").exists()  # nothing half-written


def test_no_xml_existing_output_and_missing_folders(tmp_path, data_home):
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    (empty / "sub" / "a.png").write_bytes(b"")
    with pytest.raises(VaelabError, match=r"no \.xml files found in .*empty"):
        import_voc(empty)
    with pytest.raises(VaelabError, match="no annotations folder at"):
        import_voc(tmp_path / "nowhere")
    d = _xys(tmp_path / "xys", n=2)
    with pytest.raises(VaelabError, match="no image folder at"):
        import_voc(d / "annotations", images=d / "imgs", preset="xys")
    out = import_voc(d / "annotations", tmp_path / "x" / "table.csv", preset="xys", boxes=["reye", "leye"])
    assert out.is_file() and len(_rows(out)) == 2
    with pytest.raises(VaelabError, match=r"table\.csv exists; pass --force"):
        import_voc(d / "annotations", out, preset="xys")
    assert import_voc(d / "annotations", out, preset="xys", force=True) == out
    assert "face_xmin" in _rows(out)[0]
    # the CSV may live anywhere: csv=PATH
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        ds = load("image-folder", root=d / "images", size=8, csv=out, stack="full,reye,leye", box_scale=2)
    assert ds.factor_names == ["gaze_x", "head_camera_distance"]  # gaze_y is constant for images 0 and 1


def test_cli_import_voc_end_to_end(tmp_path, data_home, capsys):
    from vaelab.cli import main

    d = _xys(tmp_path / "xys")
    argv = ["data", "import-voc", str(d / "annotations"), "--images", str(d / "images"), "--preset", "xys",
            "--sum", "gaze_y=data/gaze_position/y+data/camera_screen_center_offset/y",
            "--factor", "model=data/model", "--quiet"]
    rc = main(argv)
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert f"wrote {d / 'images' / 'factors.csv'}: 4 images from 4 XML files" in out
    assert "factors: gaze_x, gaze_y, head_camera_distance, model; boxes: face, leye, reye" in out
    assert f"next: vaelab data info image-folder --root {d / 'images'} --stack full,reye,leye --box-scale 2" in out
    rows = _rows(d / "images" / "factors.csv")
    assert [r["model"] for r in rows] == ["m0", "m1", "m0", "m1"] and rows[3]["gaze_y"] == "2.0"
    # the printed next step works
    rc = main(["data", "info", "image-folder", "--root", str(d / "images"), "--size", "16", "--stack",
               "full,reye,leye", "--box-scale", "2", "--quiet"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert "4 images" in out and "gaze_x" in out

    def one_error(argv):
        rc = main(argv)
        _, err = capsys.readouterr()
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert rc == 2 and "Traceback" not in err and len(lines) == 1 and lines[0].startswith("vaelab: error: ")
        return lines[0]

    assert "factors.csv exists; pass --force" in one_error(argv)
    assert main(argv + ["--force"]) == 0
    capsys.readouterr()
    assert "--sum 'gaze_y': expected NAME=PATH+PATH" in one_error(argv[:-1] + ["--sum", "gaze_y", "--force"])
    assert "factor 'g' is given twice" in one_error(
        ["data", "import-voc", str(d / "annotations"), "--factor", "g=data/model", "--sum", "g=a+b"])
    (d / "annotations" / "img3.xml").write_text("<annotation><filename>img3")
    line = one_error(argv + ["--force"])
    assert "img3.xml: not well-formed XML" in line
