"""Where vaelab looks for data and writes runs.

Data directory, in order: the ``--data-dir`` option (passed as ``data_dir``),
the ``VAELAB_DATA`` environment variable, else ``~/.cache/vaelab/data``.
"""
from __future__ import annotations

import os
from pathlib import Path

DEFAULT_DATA_DIR = Path.home() / ".cache" / "vaelab" / "data"


def require_folder(path: str | os.PathLike, option: str | tuple[str, str], holds: str) -> Path:
    """``path`` as a Path, unless something other than a folder is there: then one clear error naming
    the ``option`` the user gave it with (``(python argument, --flag)`` when the API and the command
    line name it differently) and what the folder would hold."""
    from .errors import naming

    p = Path(path).expanduser()
    if p.exists() and not p.is_dir():
        raise naming("{option} {path} is a file, not a folder: choose a folder for {holds}", option=option,
                     path=str(path), holds=holds)
    return p


def data_dir(override: str | os.PathLike | None = None) -> Path:
    """The data directory (not created)."""
    if override:
        return Path(override).expanduser()
    env = os.environ.get("VAELAB_DATA")
    if env:
        return Path(env).expanduser()
    return DEFAULT_DATA_DIR


def set_data_dir(path: str | os.PathLike) -> None:
    """Make ``path`` the data directory for this process (used by ``--data-dir``)."""
    os.environ["VAELAB_DATA"] = str(Path(path).expanduser())


def cache_dir(override: str | os.PathLike | None = None) -> Path:
    """Folder for derived arrays (prepared images, rendered procedural dSprites)."""
    return data_dir(override) / "cache"
