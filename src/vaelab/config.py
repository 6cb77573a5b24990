"""Run configuration: dataclasses, TOML presets, dotted ``--set`` overrides.

A config has four tables, each validated once here:

* ``[data]``  which dataset, split, size, validation fraction and sampling mode;
* ``[model]`` the objective, network, latent size, likelihood and the objective's own keys
  (validated by :func:`vaelab.models.build_model`; defaults filled by ``objective_defaults``);
* ``[optim.<group>]`` one Adam per parameter group ("vae"; FactorVAE adds "disc"), each with
  its own lr, betas and schedule;
* ``[train]`` length, batch size, seed, device, logging / image / checkpoint cadence.

The resolved config is saved as ``runs/NAME/config.toml`` and is all a run needs to be rebuilt.
"""
from __future__ import annotations

import copy
import dataclasses
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import VaelabError, closest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

PRESET_DIR = Path(__file__).parent / "presets"

SAMPLING_MODES = ("epoch_permutation", "iid")  # docs/conventions.md#training-conventions
SCHEDULES = ("constant", "step", "exponential", "plateau")


@dataclass
class DataConfig:
    name: str = "dsprites-procedural"
    root: str = ""  # file or folder; "" = the data directory
    split: str = "train"
    size: int = 0  # image side; 0 = the dataset's default
    val_fraction: float = 0.0  # held-out fraction of the training split (by train.seed); see train.val_every
    sampling: str = "epoch_permutation"  # docs/conventions.md#training-conventions: "epoch_permutation" (default) or "iid" (dlib)
    options: dict = field(default_factory=dict)  # loader options (e.g. preprocess = "center_crop_148")

    def validate(self):
        if self.sampling not in SAMPLING_MODES:
            raise VaelabError(f"data.sampling must be one of {SAMPLING_MODES}, got {self.sampling!r}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise VaelabError(f"data.val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.size < 0:
            raise VaelabError(f"data.size must be >= 0, got {self.size}")


@dataclass
class OptimConfig:
    """Adam for one parameter group, with a learning-rate schedule over iterations."""

    lr: float = 1e-4
    betas: list = field(default_factory=lambda: [0.9, 0.999])  # Adam defaults (docs/recipes.md#defaults)
    eps: float = 1e-8  # docs/conventions.md#training-conventions
    weight_decay: float = 0.0
    schedule: str = "constant"  # constant | step | exponential | plateau
    decay: float = 1.0  # multiplicative factor of step / exponential / plateau schedules
    decay_every: int = 0  # step: multiply by `decay` every N iterations; exponential: lr * decay**(t/N)
    milestones: list = field(default_factory=list)  # step: multiply by `decay` at these iterations instead
    patience: int = 5  # plateau: validations without improvement before decaying (Knight13/beta-VAE-disentanglement: 5 epochs)
    min_lr: float = 0.0  # plateau floor (Knight13/beta-VAE-disentanglement: 1e-10)

    def validate(self, group: str):
        if self.schedule not in SCHEDULES:
            raise VaelabError(f"optim.{group}.schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise VaelabError(f"optim.{group}.lr must be a positive number, got {self.lr}")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise VaelabError(f"optim.{group}.betas must be two numbers in [0, 1), got {self.betas}")
        if not (self.eps > 0 and math.isfinite(self.eps)):
            raise VaelabError(f"optim.{group}.eps must be a positive number, got {self.eps}")
        for key in ("weight_decay", "min_lr"):
            if not (getattr(self, key) >= 0 and math.isfinite(getattr(self, key))):
                raise VaelabError(f"optim.{group}.{key} must be a number >= 0, got {getattr(self, key)}")
        if not (self.decay > 0 and math.isfinite(self.decay)):
            raise VaelabError(f"optim.{group}.decay must be a positive number, got {self.decay}")
        if self.schedule in ("exponential",) and self.decay_every <= 0:
            raise VaelabError(f"optim.{group}.decay_every must be > 0 for the {self.schedule} schedule")
        if self.schedule == "step" and self.decay_every <= 0 and not self.milestones:
            raise VaelabError(f"optim.{group}: the step schedule needs decay_every or milestones")

    def lr_at(self, t: int, plateau_factor: float = 1.0) -> float:
        """Learning rate after ``t`` completed iterations (plateau decays are passed in)."""
        if self.schedule == "step":
            if self.milestones:
                n = sum(1 for m in self.milestones if t >= m)
            else:
                n = t // self.decay_every
            return self.lr * self.decay ** n
        if self.schedule == "exponential":
            return self.lr * self.decay ** (t / self.decay_every)
        if self.schedule == "plateau":
            return max(self.lr * plateau_factor, self.min_lr)
        return self.lr


@dataclass
class TrainConfig:
    steps: int = 1000  # iterations (docs/conventions.md#training-conventions: one iteration = one update of every optimiser)
    epochs: float = 0.0  # if > 0, steps = epochs * floor(N_train / batch_size) (docs/conventions.md#training-conventions)
    batch_size: int = 64
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    log_every: int = 100
    image_every: int = 0  # reconstruction grids to images/ and TensorBoard; 0 = only at the end
    checkpoint_every: int = 5000
    keep_checkpoints: int = 3
    val_every: int = 0  # validate every N steps and at the end (needs data.val_fraction > 0 or folds); 0 = never
    val_batches: int = 10
    folds: int = 0  # k-fold cross-validation: K models, each validated on the fold it never saw
    out: str = ""  # the run folder; "" = runs/<name>
    tensorboard: bool = True
    fast: str = "auto"  # off | compile | cuda-graph | auto (the best that works; always off on the CPU)
    bf16: bool = False  # bf16 autocast around the forward pass

    def validate(self):
        for key in ("batch_size", "log_every", "keep_checkpoints", "val_batches"):
            if getattr(self, key) <= 0:
                raise VaelabError(f"train.{key} must be > 0, got {getattr(self, key)}")
        for key in ("steps", "checkpoint_every", "image_every", "val_every"):
            if getattr(self, key) < 0:
                raise VaelabError(f"train.{key} must be >= 0, got {getattr(self, key)}")
        if self.seed < 0:
            raise VaelabError(f"train.seed must be a non-negative integer, got {self.seed}")
        if not self.epochs >= 0:
            raise VaelabError(f"train.epochs must be >= 0, got {self.epochs}")
        if not math.isfinite(self.epochs):
            raise VaelabError(f"train.epochs must be a finite number, got {self.epochs}")
        if self.steps == 0 and self.epochs == 0:
            raise VaelabError("nothing to train: train.steps and train.epochs are both 0 (give --steps N)")
        if self.fast not in ("off", "compile", "cuda-graph", "auto"):
            raise VaelabError(f"train.fast must be off, compile, cuda-graph or auto, got {self.fast!r}")
        if self.folds == 1 or self.folds < 0:
            raise VaelabError(f"train.folds must be 0 (off) or >= 2, got {self.folds}")


@dataclass
class Config:
    name: str = "run"
    description: str = ""
    source: str = ""  # where the recipe comes from (paper, repository, script)
    # modules or .py files that register objectives, metrics, nets, datasets (vaelab.plugins): loaded by
    # validate(), recorded in the run's config.toml so every later command on the run loads them again
    plugins: list = field(default_factory=list)
    data: DataConfig = field(default_factory=DataConfig)
    model: dict = field(default_factory=lambda: {"objective": "betavae"})
    optim: dict = field(default_factory=lambda: {"vae": OptimConfig()})
    train: TrainConfig = field(default_factory=TrainConfig)

    # ------------------------------------------------------------------ validation
    def validate(self) -> "Config":
        for key, value in flatten(self.to_dict()).items():  # it is saved as UTF-8 TOML and JSON
            for text in (value if isinstance(value, list) else [value]):
                if isinstance(text, str) and not _utf8(text):
                    shown = text.encode("utf-8", "backslashreplace").decode()
                    raise VaelabError(f"{key} {shown!r} is not valid UTF-8 text (a file name in another "
                                      f"encoding?): choose a name in UTF-8")
        self.data.validate()
        self.train.validate()
        for group, oc in self.optim.items():
            oc.validate(group)
        if not isinstance(self.model, dict) or "objective" not in self.model:
            raise VaelabError("the [model] table needs an `objective` key")
        from . import plugins
        from .models import model_defaults, resolve_aliases

        # before any name is looked up; plugins given on the command line are recorded too
        self.plugins = plugins.load(list(self.plugins) + plugins.command_line())
        defaults = model_defaults(self.model["objective"])  # raises for unknown objectives
        self.model = resolve_aliases(self.model)  # e.g. UG-VAE's dim_z -> latent_dim

        unknown = [k for k in self.model if k not in defaults]
        if unknown:
            raise VaelabError(f"unknown model key {unknown[0]!r} for objective {self.model['objective']!r}"
                              f"{closest(unknown[0], defaults)}; valid keys: {', '.join(sorted(defaults))}")
        self.model = {**defaults, **self.model}
        return self

    # ------------------------------------------------------------------ (de)serialisation
    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        if not d["plugins"]:  # configs without plugins read as they always have
            del d["plugins"]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Config":
        d = dict(d)
        d.pop("extends", None)
        known = {f.name for f in dataclasses.fields(cls)}
        for key in d:
            if key not in known:
                raise VaelabError(f"unknown config key {key!r}{closest(key, known)}; "
                                  f"tables are [data], [model], [optim.<group>], [train]")
        data = _build(DataConfig, d.get("data", {}), "data")
        train = _build(TrainConfig, d.get("train", {}), "train")
        optim_d = d.get("optim", {"vae": {}})
        if not isinstance(optim_d, dict) or not all(isinstance(v, dict) for v in optim_d.values()):
            raise VaelabError("[optim] must hold one table per parameter group, e.g. [optim.vae]")
        optim = {g: _build(OptimConfig, v, f"optim.{g}") for g, v in optim_d.items()}
        model = dict(d.get("model", {"objective": "betavae"}))
        plugins = d.get("plugins", [])
        if not isinstance(plugins, list) or not all(isinstance(p, str) for p in plugins):
            raise VaelabError(f"plugins must be a list of module names or .py files, got {plugins!r}")
        return cls(name=d.get("name", "run"), description=d.get("description", ""),
                   source=d.get("source", ""), plugins=list(plugins), data=data, model=model, optim=optim,
                   train=train)

    def to_toml(self) -> str:
        return dumps_toml(self.to_dict())


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _build(cls, values: dict, where: str):
    if not isinstance(values, dict):
        raise VaelabError(f"[{where}] must be a table")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in values.items():
        if key not in fields:
            raise VaelabError(f"unknown key {where}.{key}{closest(key, fields)}; "
                              f"valid keys: {', '.join(fields)}")
        kwargs[key] = _coerce(value, fields[key], f"{where}.{key}")
    return cls(**kwargs)


def _coerce(value, f: dataclasses.Field, where: str):
    """Check a TOML value against the field's default type (ints accepted for floats)."""
    default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
    expected = type(default)
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if expected is int and isinstance(value, float) and value.is_integer():
        return int(value)
    if expected is bool and not isinstance(value, bool):
        raise VaelabError(f"{where} must be true or false, got {value!r}")
    if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
        raise VaelabError(f"{where} must be {expected.__name__}, got {value!r}")
    return value


# ---------------------------------------------------------------------- presets and overrides
def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.toml") if not p.stem.startswith("_"))


def read_toml(path: Path) -> dict:
    try:
        with open(path, "rb") as fh:
            d = tomllib.load(fh)
    except FileNotFoundError:
        raise VaelabError(f"config file not found: {path}") from None
    except tomllib.TOMLDecodeError as e:
        raise VaelabError(f"{path} is not valid TOML: {e}") from None
    except UnicodeDecodeError as e:
        raise VaelabError(f"{path} is not valid TOML: byte 0x{e.object[e.start]:02x} at offset {e.start} is "
                          f"not UTF-8 text") from None
    except OSError as e:
        raise VaelabError(f"cannot read {path}: {e.strerror}") from None
    if isinstance(d.get("plugins"), list):  # plugin files relative to the TOML file
        from .plugins import canonical

        d["plugins"] = [canonical(s, base=Path(path).parent) if isinstance(s, str) else s for s in d["plugins"]]
    parent = d.get("extends")
    if parent:  # a preset may extend another (same folder, or a named preset)
        base_path = path.parent / f"{parent}.toml"
        if not base_path.exists():
            base_path = PRESET_DIR / f"{parent}.toml"
        d = merge(read_toml(base_path), d)
        d.pop("extends", None)
    return d


def flatten(d, prefix: str = "") -> dict:
    """Nested dicts -> one level with dotted keys."""
    out = {}
    if isinstance(d, dict):
        for k, v in d.items():
            key = f"{prefix}.{k}" if prefix else str(k)
            if isinstance(v, dict):
                out.update(flatten(v, key))
            else:
                out[key] = v
    return out


def merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict) and k != "options":
            out[k] = merge(out[k], v)
        else:
            out[k] = v
    return out


def load_preset(name_or_path: str | Path) -> dict:
    """The raw dict of a preset name (see ``vaelab presets``) or a TOML file path."""
    p = Path(name_or_path)
    if p.suffix == ".toml" or p.exists():
        return read_toml(p)
    path = PRESET_DIR / f"{name_or_path}.toml"
    if not path.exists():
        raise VaelabError(f"unknown preset {str(name_or_path)!r}{closest(str(name_or_path), preset_names())}; "
                          f"`vaelab presets` lists them, or pass a .toml file")
    d = read_toml(path)
    d.setdefault("name", str(name_or_path))
    return d


def parse_override(item: str) -> tuple[list[str], Any]:
    """``"model.gamma=10"`` -> (["model", "gamma"], 10). Values are TOML (strings may be bare)."""
    if "=" not in item:
        raise VaelabError(f"bad override {item!r}: expected key=value, e.g. model.beta=4")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise VaelabError(f"bad override {item!r}: the key must be dotted, e.g. train.steps=100")
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()  # bare string
    return key.split("."), value


def apply_overrides(d: dict, overrides) -> dict:
    """Apply ``--set`` style overrides (strings "a.b=v" or a dict {"a.b": v})."""
    d = copy.deepcopy(d)
    items = overrides.items() if isinstance(overrides, dict) else [parse_override(o) for o in overrides]
    for key, value in items:
        parts = key.split(".") if isinstance(key, str) else key
        node = d
        for part in parts[:-1]:
            nxt = node.setdefault(part, {})
            if not isinstance(nxt, dict):
                raise VaelabError(f"bad override {'.'.join(parts)}: {part!r} is not a table")
            node = nxt
        node[parts[-1]] = value
    return d


def resolve(preset_or_config, overrides=None) -> Config:
    """Preset name, TOML path, dict or Config + overrides -> a validated Config."""
    if isinstance(preset_or_config, Config):
        d = preset_or_config.to_dict()
    elif isinstance(preset_or_config, dict):
        d = preset_or_config
    else:
        d = load_preset(preset_or_config)
    if overrides:
        d = apply_overrides(d, overrides)
    return Config.from_dict(d).validate()


# ---------------------------------------------------------------------- a small TOML writer
def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{_toml_key(k)} = {_toml_value(x)}" for k, x in v.items()) + " }"
    if v is None:
        raise ValueError("TOML has no null")
    return _toml_value(str(v))


def _toml_key(k: str) -> str:
    return k if k.replace("_", "").replace("-", "").isalnum() else _toml_value(k)


_INLINE_TABLES = ("options", "net_options")  # small dicts written inline


def dumps_toml(d: dict, prefix: str = "") -> str:
    """Serialise nested dicts (tables) of scalars, lists and small inline dicts."""
    is_table = lambda k, v: isinstance(v, dict) and k not in _INLINE_TABLES  # noqa: E731
    scalars = [(k, v) for k, v in d.items() if v is not None and not is_table(k, v)]
    tables = [(k, v) for k, v in d.items() if is_table(k, v)]
    parts = []
    if prefix and (scalars or not tables):
        parts.append(f"[{prefix}]")
    parts += [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in scalars]
    for k, v in tables:
        name = f"{prefix}.{_toml_key(k)}" if prefix else _toml_key(k)
        parts.append("")
        parts.append(dumps_toml(v, name).rstrip("\n"))
    return "\n".join(parts).strip("\n") + "\n"
