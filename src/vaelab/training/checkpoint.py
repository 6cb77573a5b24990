"""Checkpoints: safetensors for tensors, JSON for the rest, written atomically.

A checkpoint is a folder ``checkpoints/step-00001234/`` holding ``tensors.safetensors``
(model weights, optimiser moments, RNG and sampler states) and ``state.json`` (step, config,
optimiser hyperparameters, sampler position, RNG states that are not tensors).
It is written into a hidden temporary folder, every file fsynced, then renamed into place and
the parent fsynced: a folder named ``step-*`` is always complete, whatever moment the process
dies (SIGKILL included). Leftover temporary folders are ignored and cleaned up.
Nothing is ever unpickled.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..errors import VaelabError

PREFIX = "step-"
TMP_PREFIX = ".tmp-"


def _fsync_dir(path: Path):
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_synced(path: Path, data: bytes):
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def optimizer_to_flat(name: str, opt: torch.optim.Optimizer) -> tuple[dict, dict]:
    """Split an optimiser state dict into tensors (flat names) and JSON."""
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for pid, st in sd["state"].items():
        for key, val in st.items():
            if isinstance(val, torch.Tensor):
                tensors[f"optim.{name}.{pid}.{key}"] = val.detach().cpu().clone()
            else:
                scalars[f"{pid}.{key}"] = val
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def optimizer_from_flat(name: str, opt: torch.optim.Optimizer, tensors: dict, info: dict):
    state: dict = {}
    prefix = f"optim.{name}."
    for key, val in tensors.items():
        if key.startswith(prefix):
            pid, field = key[len(prefix):].split(".", 1)
            state.setdefault(int(pid), {})[field] = val
    for key, val in info.get("scalars", {}).items():
        pid, field = key.split(".", 1)
        state.setdefault(int(pid), {})[field] = val
    opt.load_state_dict({"state": state, "param_groups": info["param_groups"]})


def save(run_dir: Path, step: int, tensors: dict[str, torch.Tensor], state: dict, keep: int = 3) -> Path:
    """Write checkpoint ``step`` atomically; keep the newest ``keep``. Returns its folder."""
    ckdir = Path(run_dir) / "checkpoints"
    ckdir.mkdir(parents=True, exist_ok=True)
    final = ckdir / f"{PREFIX}{step:08d}"
    tmp = ckdir / f"{TMP_PREFIX}{PREFIX}{step:08d}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    save_file(tensors, str(tmp / "tensors.safetensors"))
    with open(tmp / "tensors.safetensors", "rb+") as fh:
        os.fsync(fh.fileno())
    _write_synced(tmp / "state.json", json.dumps(state, indent=1).encode())
    _fsync_dir(tmp)
    if final.exists():  # re-saving the same step (e.g. Ctrl-C right after a periodic save)
        old = _retire(final)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)
    _fsync_dir(ckdir)
    for old in list_checkpoints(run_dir)[:-keep] if keep > 0 else []:
        shutil.rmtree(_retire(old), ignore_errors=True)
    return final


def _retire(path: Path) -> Path:
    """Rename a checkpoint folder to a temporary name before deleting it.

    ``rmtree`` removes the files one by one; a process killed half-way through would leave a
    ``step-*`` folder without its tensors. Renamed first (one atomic step), a half-deleted folder
    is a temporary one, which ``list_checkpoints`` ignores and cleans up.
    """
    gone = path.parent / f"{TMP_PREFIX}old-{path.name}-{os.getpid()}"
    os.replace(path, gone)
    return gone


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first; stale temporary folders are removed."""
    ckdir = Path(run_dir) / "checkpoints"
    if not ckdir.is_dir():
        return []
    out = []
    for p in ckdir.iterdir():
        if p.name.startswith(TMP_PREFIX):
            if not _owned_by_live_process(p):
                shutil.rmtree(p, ignore_errors=True)
        elif p.name.startswith(PREFIX) and p.is_dir():
            out.append(p)
    return sorted(out, key=lambda p: int(p.name[len(PREFIX):]))


def _owned_by_live_process(p: Path) -> bool:
    try:
        pid = int(p.name.rsplit("-", 1)[1])
    except (IndexError, ValueError):
        return False
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
        return True
    except OSError:
        return False


def find(run_dir: Path, step: int | None = None) -> Path:
    """The checkpoint at ``step`` (default: the newest)."""
    cks = list_checkpoints(run_dir)
    if not cks:
        raise VaelabError(f"no checkpoint in {Path(run_dir) / 'checkpoints'}: the run has not saved one yet")
    if step is None:
        return cks[-1]
    for p in cks:
        if int(p.name[len(PREFIX):]) == step:
            return p
    have = ", ".join(p.name[len(PREFIX):].lstrip("0") or "0" for p in cks)
    raise VaelabError(f"no checkpoint at step {step} in {run_dir}; available steps: {have}")


def state_dict_mismatch(error: RuntimeError) -> str:
    """The informative line of ``load_state_dict``'s error (its first line only names the class)."""
    lines = [ln.strip() for ln in str(error).splitlines() if ln.strip()]
    detail = lines[1] if len(lines) > 1 else (lines[0] if lines else type(error).__name__)
    more = f" (and {len(lines) - 2} more)" if len(lines) > 2 else ""
    return (detail[:240] + ("..." if len(detail) > 240 else "")) + more


def load(path: Path, device="cpu") -> tuple[dict[str, torch.Tensor], dict]:
    """(tensors, state) of a checkpoint folder; a damaged one is one clear error."""
    path = Path(path)
    try:
        tensors = load_file(str(path / "tensors.safetensors"), device=str(device))
        state = json.loads((path / "state.json").read_text())
    except FileNotFoundError as e:  # safetensors' own error carries no filename
        missing = [n for n in ("tensors.safetensors", "state.json") if not (path / n).exists()]
        what = ", ".join(missing) or Path(e.filename or "a file").name
        raise VaelabError(f"checkpoint {path} is incomplete: {what} missing") from None
    except (SafetensorError, json.JSONDecodeError, OSError, ValueError) as e:
        raise VaelabError(f"checkpoint {path} is corrupt ({type(e).__name__}: {str(e)[:120]})") from None
    return tensors, state
