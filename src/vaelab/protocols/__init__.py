"""Study protocols as data: which objectives, which values of which config key, which seeds, how many
steps and which metrics a published study used (``vaelab study PROTOCOL``).

A protocol is a TOML file (the packaged ones live beside this module; ``unsupervised_study_v1`` is
disentanglement_lib's study, see its file for the sources):

```
name = "my_study"
steps = 300000
seeds = [0, 1, 2]
metrics = ["mig", "dci", "elbo"]
set = ["train.log_every=1000"]     # optional: overrides for every run

[models.betavae]
title = "β-VAE"
preset = "dlib-betavae-dsprites"   # a preset name, or a .toml path (relative to the protocol file)
key = "model.beta"                 # the config key the study varies
values = [1, 4, 16]
set = []                           # optional: overrides for this model's runs
```

:func:`load_protocol` reads and checks one (a packaged name or a path); every problem is one
:class:`~vaelab.errors.VaelabError` line.
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import VaelabError, closest

PROTOCOL_DIR = Path(__file__).resolve().parent

__all__ = ["Protocol", "ModelSpec", "protocol_names", "load_protocol", "PROTOCOL_DIR"]

_TOP_KEYS = {"name", "description", "source", "paper", "dataset", "steps", "seeds", "metrics", "set", "models"}
_MODEL_KEYS = {"title", "preset", "key", "values", "set", "description"}


@dataclass
class ModelSpec:
    """One objective of a protocol: its preset, the key it varies and the values it takes."""

    name: str
    title: str
    preset: str
    key: str
    values: list
    overrides: list[str] = field(default_factory=list)
    preset_given: str = ""  # as the protocol file writes it (a .toml path is resolved in ``preset``)

    @property
    def short_key(self) -> str:
        return self.key.split(".")[-1]


@dataclass
class Protocol:
    name: str
    description: str
    source: str
    paper: str
    steps: int
    seeds: list[int]
    metrics: list[str]
    models: dict[str, ModelSpec]
    overrides: list[str]
    path: Path
    text: str

    @property
    def digest(self) -> str:
        """sha256 of the protocol's content (comments and layout aside): a study folder holds one protocol."""
        return hashlib.sha256(json.dumps(self.as_dict(), sort_keys=True).encode()).hexdigest()

    def as_dict(self) -> dict:
        return {"name": self.name, "description": self.description, "source": self.source, "paper": self.paper,
                "steps": self.steps, "seeds": self.seeds, "metrics": self.metrics, "set": self.overrides,
                "models": {m.name: {"title": m.title, "preset": m.preset_given or m.preset, "key": m.key,
                                    "values": m.values,
                                    "set": m.overrides} for m in self.models.values()}}


def protocol_names() -> list[str]:
    """The packaged protocols."""
    return sorted(p.stem for p in PROTOCOL_DIR.glob("*.toml"))


def _path_of(name_or_path) -> Path:
    p = Path(name_or_path)
    if p.suffix == ".toml" or p.exists() or len(p.parts) > 1:
        if p.is_dir():
            raise VaelabError(f"protocol {p} is a folder: give a protocol TOML file or one of "
                              f"{', '.join(protocol_names())}")
        if not p.is_file():
            raise VaelabError(f"protocol file not found: {p} (packaged protocols: {', '.join(protocol_names())})")
        return p
    packaged = PROTOCOL_DIR / f"{name_or_path}.toml"
    if not packaged.is_file():
        raise VaelabError(f"unknown protocol {str(name_or_path)!r}{closest(str(name_or_path), protocol_names())}; "
                          f"packaged: {', '.join(protocol_names())}, or pass a .toml file of the same shape")
    return packaged


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _overrides(raw, where: str) -> list[str]:
    from ..config import parse_override

    if raw is None:
        return []
    if not isinstance(raw, list) or not all(isinstance(x, str) for x in raw):
        raise VaelabError(f"{where}: set must be a list of \"key=value\" strings")
    for item in raw:
        parse_override(item)  # a bad one is its own one-line error
    return list(raw)


def load_protocol(name_or_path) -> Protocol:
    """Read and check a protocol: a packaged name (``protocol_names()``) or a TOML file path."""
    from ..config import read_toml, resolve
    from ..metrics.evaluate import resolve_metrics

    path = _path_of(name_or_path)
    raw = read_toml(path)
    bad = f"bad protocol {path}"
    unknown = sorted(set(raw) - _TOP_KEYS)
    if unknown:
        raise VaelabError(f"{bad}: unknown key {unknown[0]!r}{closest(unknown[0], _TOP_KEYS)}; valid: "
                          f"{', '.join(sorted(_TOP_KEYS))}")
    name = raw.get("name", path.stem)
    if not isinstance(name, str) or not name or Path(name).name != name or name in (".", ".."):
        raise VaelabError(f"{bad}: name must be a plain word (it names the study folder), got {name!r}")
    steps = raw.get("steps")
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise VaelabError(f"{bad}: steps must be a positive integer (training iterations), got {steps!r}")
    seeds = raw.get("seeds")
    if (not isinstance(seeds, list) or not seeds
            or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds)):
        raise VaelabError(f"{bad}: seeds must be a non-empty list of non-negative integers, got {seeds!r}")
    if len(set(seeds)) != len(seeds):
        raise VaelabError(f"{bad}: seeds lists a seed twice")
    metrics = raw.get("metrics", "all")
    try:
        metrics, _ = resolve_metrics(metrics)
    except VaelabError as e:
        raise VaelabError(f"{bad}: metrics: {e}") from None
    models_raw = raw.get("models")
    if not isinstance(models_raw, dict) or not models_raw:
        raise VaelabError(f"{bad}: no [models.NAME] table: a protocol names at least one objective")
    models = {}
    for mname, m in models_raw.items():
        where = f"{bad}: [models.{mname}]"
        if not isinstance(m, dict):
            raise VaelabError(f"{where} must be a table")
        if "," in mname or "=" in mname or Path(mname).name != mname or mname in (".", ".."):
            raise VaelabError(f"{where}: the model name must be a plain word (it names a folder and is given to "
                              f"--models)")
        unknown = sorted(set(m) - _MODEL_KEYS)
        if unknown:
            raise VaelabError(f"{where}: unknown key {unknown[0]!r}{closest(unknown[0], _MODEL_KEYS)}; valid: "
                              f"{', '.join(sorted(_MODEL_KEYS))}")
        for k in ("preset", "key", "values"):
            if k not in m:
                raise VaelabError(f"{where} has no {k}")
        preset, key, values = m["preset"], m["key"], m["values"]
        if not isinstance(preset, str) or not preset:
            raise VaelabError(f"{where}: preset must be a preset name or a .toml path")
        if preset.endswith(".toml") and not Path(preset).is_absolute():
            preset = str((path.parent / preset).resolve())  # relative to the protocol file
        if not isinstance(key, str) or "." not in key or any(not part for part in key.split(".")):
            raise VaelabError(f"{where}: key must be a dotted config key such as model.beta, got {key!r}")
        if key in ("train.seed", "train.out", "train.steps"):
            raise VaelabError(f"{where}: key {key} is set by the study itself (seeds, folders, steps)")
        if not isinstance(values, list) or not values or not all(_number(v) for v in values):
            raise VaelabError(f"{where}: values must be a non-empty list of numbers, got {values!r}")
        if len({float(v) for v in values}) != len(values):
            raise VaelabError(f"{where}: values lists a value twice")
        try:
            base = resolve(preset).to_dict()
        except VaelabError as e:
            raise VaelabError(f"{where}: {e}") from None
        node = base
        for part in key.split(".")[:-1]:
            node = node.get(part) if isinstance(node, dict) else None
        if not isinstance(node, dict) or key.split(".")[-1] not in node:
            raise VaelabError(f"{where}: key {key} is not in preset {m['preset']}'s config (a typo? the preset's "
                              f"{key.split('.')[0]} keys: {', '.join(sorted(node)) if isinstance(node, dict) else '-'})")
        default = node[key.split(".")[-1]]
        if isinstance(default, float):  # the preset's type: 4 in a protocol is beta 4.0
            values = [float(v) for v in values]
        elif isinstance(default, int) and not isinstance(default, bool):
            if not all(float(v).is_integer() for v in values):
                raise VaelabError(f"{where}: {key} is an integer in preset {m['preset']}, got values {values!r}")
            values = [int(v) for v in values]
        models[mname] = ModelSpec(name=mname, title=str(m.get("title", mname)), preset=preset, key=key,
                                  values=list(values), overrides=_overrides(m.get("set"), where),
                                  preset_given=m["preset"])
    text = path.read_text(encoding="utf-8")
    return Protocol(name=name, description=str(raw.get("description", "")), source=str(raw.get("source", "")),
                    paper=str(raw.get("paper", "")), steps=steps, seeds=list(seeds), metrics=metrics,
                    models=models, overrides=_overrides(raw.get("set"), bad), path=path, text=text)
