"""Plugins: your own objectives, metrics, nets and datasets, without editing vaelab.

A plugin is a Python module that registers things when it is imported, each with one call:

* :func:`register_objective` (a :class:`vaelab.models.VAE` subclass; also a class decorator),
* :func:`register_metric` (a scoring function and its defaults, for ``vaelab evaluate``),
* :func:`register_net` (an encoder/decoder builder),
* :func:`register_dataset` (a :class:`vaelab.data.DatasetSpec`),
* :func:`register_training_pictures` (pictures the trainer draws every ``train.image_every`` steps).

vaelab imports plugins from three places:

* installed packages that declare an entry point in the group ``vaelab.plugins`` (pyproject.toml:
  ``[project.entry-points."vaelab.plugins"] mine = "my_package.vaelab_plugin"``), loaded the first time
  vaelab looks for a name it does not know, or lists what it has;
* ``plugins = ["my_module", "path/to/file.py"]`` at the top of a config TOML (files relative to it);
* ``vaelab --plugin FILE.py`` (or a module name; repeatable, before or after the subcommand).

A run records its plugins in its ``config.toml`` (the ones it was trained with, from its config or the
command line), so ``vaelab evaluate|report|traverse RUN`` and every later command load them again. A
plugin that is not found, or that raises while it is imported, is one error line naming it.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import traceback
from contextlib import contextmanager
from pathlib import Path

from .errors import VaelabError, closest

__all__ = ["ENTRY_POINT_GROUP", "load", "load_entry_points", "load_for_runs", "loaded", "command_line",
           "from_command_line",
           "register_objective", "register_metric", "register_net", "register_dataset",
           "register_training_pictures", "claim"]

ENTRY_POINT_GROUP = "vaelab.plugins"

_loaded: dict[str, str] = {}  # plugin (module name or absolute .py path) -> the module it was imported as
_from_command_line: list[str] = []  # --plugin values of this process: recorded in the configs it trains
_entry_points_done = False


# ---------------------------------------------------------------------------------------- registration
def register_objective(cls):
    """See :func:`vaelab.models.register_objective`."""
    from .models import register_objective as reg

    return reg(cls)


def register_metric(*args, **kwargs):
    """See :func:`vaelab.metrics.registry.register_metric`."""
    from .metrics.registry import register_metric as reg

    return reg(*args, **kwargs)


def register_net(*args, **kwargs):
    """See :func:`vaelab.nets.register_net`."""
    from .nets import register_net as reg

    return reg(*args, **kwargs)


def register_dataset(spec):
    """See :func:`vaelab.data.registry.register_dataset`."""
    from .data.registry import register_dataset as reg

    return reg(spec)


def register_training_pictures(*args, **kwargs):
    """See :func:`vaelab.hooks.register_training_pictures`."""
    from .hooks import register_training_pictures as reg

    return reg(*args, **kwargs)


def _origin(obj) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', type(obj).__qualname__)}"


def claim(registry: dict, kind: str, name: str, obj, origin=_origin) -> None:
    """``registry[name] = obj``, unless another definition has the name (the same definition again, as
    when a plugin file is loaded a second time, replaces it); ``origin(obj)`` names a definition."""
    old = registry.get(name)
    if old is not None and old is not obj and origin(old) != origin(obj):
        raise VaelabError(f"{kind} {name!r} is already registered (by {origin(old)}); give yours another name")
    registry[name] = obj


# ---------------------------------------------------------------------------------------- loading
def _is_file(spec: str) -> bool:
    return spec.endswith(".py") or "/" in spec or os.sep in spec


def canonical(spec, base: str | os.PathLike | None = None) -> str:
    """A plugin as vaelab records it: a .py file as an absolute path (a relative one is relative to
    ``base``, default the current folder), a module name as given; a module name that is not importable
    but is a ``NAME.py`` beside ``base`` becomes that file."""
    if not isinstance(spec, str) or not spec.strip():
        raise VaelabError(f"a plugin is a module name or a .py file, got {spec!r}")
    spec = spec.strip()
    folder = Path(base) if base is not None else Path.cwd()
    if _is_file(spec):
        p = Path(spec).expanduser()
        return str((p if p.is_absolute() else folder / p).resolve())
    if spec not in _loaded and spec not in sys.modules:
        try:
            found = importlib.util.find_spec(spec)
        except (ImportError, ValueError):
            found = None
        except Exception:  # noqa: BLE001 - a parent package that raises: importing it reports that
            found = True
        if found is None and (folder / f"{spec}.py").is_file():
            return str((folder / f"{spec}.py").resolve())
    return spec


def _where(e: BaseException, path: str | None) -> str:
    """' (FILE, line N)' of the innermost frame in the plugin's file (else the innermost frame)."""
    frames = traceback.extract_tb(e.__traceback__)
    if not frames:
        return ""
    mine = [f for f in frames if path is not None and os.path.abspath(f.filename) == path]
    f = (mine or frames)[-1]
    return f" ({f.filename}, line {f.lineno})"


def _failed(label: str, e: BaseException, path: str | None = None) -> VaelabError:
    if isinstance(e, VaelabError):
        return VaelabError(f"plugin {label}: {e}")
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return VaelabError(f"plugin {label} failed to load: {type(e).__name__}"
                       f"{': ' + text if text else ''}{_where(e, path)}")


def _import_file(path: str) -> str:
    p = Path(path)
    if not p.is_file():
        near = closest(p.name, [q.name for q in p.parent.glob("*.py")]) if p.parent.is_dir() else ""
        raise VaelabError(f"plugin {path}: no such file{near}")
    name = "vaelab_plugin_" + "".join(c if c.isalnum() else "_" for c in p.stem)
    spec = importlib.util.spec_from_file_location(name, p)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling look classes up by module name
    try:
        spec.loader.exec_module(module)
    except BaseException as e:
        sys.modules.pop(name, None)
        if isinstance(e, (KeyboardInterrupt, SystemExit)):
            raise
        raise _failed(str(path), e, str(p.resolve())) from None
    return name


def _import_module(name: str) -> str:
    try:
        module = importlib.import_module(name)
    except ModuleNotFoundError as e:
        if e.name is not None and (name == e.name or name.startswith(e.name + ".")):
            near = closest(name, [q.stem for q in Path.cwd().glob("*.py")])
            raise VaelabError(f"plugin {name!r} not found: no module of that name on the Python path and no "
                              f"{name}.py in {Path.cwd()}{near} (give a module name or a .py file)") from None
        raise _failed(repr(name), e) from None
    except Exception as e:  # noqa: BLE001 - anything the plugin raises is reported in one line
        raise _failed(repr(name), e, None) from None
    return module.__name__


def load(specs, base: str | os.PathLike | None = None) -> list[str]:
    """Import plugins (module names or .py files; see :func:`canonical`) once each; returns them as
    recorded (files as absolute paths), in order, without repeats."""
    if specs is None:
        return []
    if isinstance(specs, (str, os.PathLike)):
        specs = [os.fspath(specs)]
    if not isinstance(specs, (list, tuple)):
        raise VaelabError(f"plugins must be a list of module names or .py files, got {specs!r}")
    out: list[str] = []
    for spec in specs:
        c = canonical(os.fspath(spec) if isinstance(spec, os.PathLike) else spec, base)
        if c not in _loaded:
            _loaded[c] = _import_file(c) if _is_file(c) else _import_module(c)
        if c not in out:
            out.append(c)
    return out


def loaded() -> list[str]:
    """Every plugin imported in this process (entry points not included), in order."""
    return list(_loaded)


def command_line() -> list[str]:
    """The plugins given on the command line of the command running now (``--plugin``): recorded in the
    config of every run it trains."""
    return list(_from_command_line)


@contextmanager
def from_command_line(specs):
    """While a command runs: load its ``--plugin`` values and record them in the configs it validates."""
    saved = list(_from_command_line)
    _from_command_line[:] = load(specs)
    try:
        yield
    finally:
        _from_command_line[:] = saved


def load_entry_points() -> None:
    """Import the installed plugins (entry point group ``vaelab.plugins``), once per process. An entry
    point names a module (imported) or a function (called with no arguments)."""
    global _entry_points_done
    if _entry_points_done:
        return
    _entry_points_done = True
    from importlib.metadata import entry_points

    try:
        eps = entry_points(group=ENTRY_POINT_GROUP)
    except TypeError:  # pragma: no cover - Python < 3.10 API
        eps = entry_points().get(ENTRY_POINT_GROUP, [])
    for ep in sorted(eps, key=lambda e: e.name):
        label = f"{ep.name!r} (entry point {ep.value} of group {ENTRY_POINT_GROUP})"
        try:
            obj = ep.load()
            if callable(obj) and not isinstance(obj, type):
                obj()
        except Exception as e:  # noqa: BLE001 - one line naming the plugin
            _entry_points_done = False  # a later call reports it again
            raise _failed(label, e) from None


def _run_configs(path: Path) -> list[Path]:
    """config.toml of a run folder, or of the runs of a sweep folder (one level down)."""
    if (path / "config.toml").is_file():
        return [path / "config.toml"]
    if path.is_dir() and (path / "sweep.json").is_file():
        return sorted(p / "config.toml" for p in path.iterdir() if (p / "config.toml").is_file())
    return []


def load_for_runs(paths) -> list[str]:
    """Load the plugins that the run folders (or sweep folders) ``paths`` were trained with, before a
    command looks up their objectives, metrics, nets or datasets by name. Unreadable configs are left
    for the command to report."""
    from .config import read_toml

    if paths is None:
        return []
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    specs: list[str] = []
    for p in paths:
        for cfg in _run_configs(Path(getattr(p, "path", p))):
            try:
                found = read_toml(cfg).get("plugins") or []
            except VaelabError:
                continue
            specs += [s for s in found if s not in specs] if isinstance(found, list) else []
    return load(specs, base=None)
