"""Soak test: interrupt `vaelab train`, `vaelab sweep` and `vaelab evaluate` at random moments, restart the
same command until it finishes, and check that nothing was lost.

For each kind of command an uninterrupted reference runs first (its wall time sets the range of the random
delays). Then, per signal (SIGKILL, SIGINT, SIGTERM) and trial: the command starts in a fresh folder, gets the
signal after a random delay (SIGINT goes to its process group, as Ctrl-C in a terminal; SIGKILL and SIGTERM to
the process, as `kill`), and is started again until it exits 0 (train: with --resume once the run folder
holds a checkpoint; sweep: with --resume once the sweep folder exists; evaluate: unchanged). A trial passes
when every run's final checkpoint holds exactly the reference's tensors (evaluate: the same scores) and no
process it started is left (every process gets a marker in its environment; the soak looks for it in
/proc/*/environ, so re-parented orphans are found too).

Not part of the test suite: it takes minutes. CPU-light: torch on one thread, a tiny MLP beta-VAE on the
real dSprites subset.

    python benchmarks/soak.py --n 3                      # 3 trials per (command, signal)
    python benchmarks/soak.py --n 1 --kinds train --signals KILL
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NPZ = Path(os.environ.get("VAELAB_TEST_DATA") or ROOT.parent / "shared" / "data") / "dsprites" / "dsprites_downsampled.npz"
PRESET = "betavae-dsprites-higgins"
SIGNALS = {"KILL": signal.SIGKILL, "INT": signal.SIGINT, "TERM": signal.SIGTERM}
TAG = "VAELAB_SOAK_TAG"
# eval.json entries that legitimately differ between two runs of the same evaluation
EVAL_VOLATILE = {"seconds", "cpu_seconds", "versions", "run", "path", "created", "background"}


# ------------------------------------------------------------------ processes
def tagged(tag: str) -> list[tuple[int, str]]:
    """(pid, command line) of every live process whose environment carries the soak's marker."""
    out, needle = [], f"{TAG}={tag}".encode()
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) == os.getpid():
            continue
        try:
            if needle not in Path(f"/proc/{d}/environ").read_bytes().split(b"\0"):
                continue
            if Path(f"/proc/{d}/stat").read_text().rsplit(")", 1)[1].split()[0] in ("Z", "X"):
                continue
            cmd = Path(f"/proc/{d}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        out.append((int(d), cmd))
    return out


def leftovers(tag: str, wait: float = 5.0) -> list[tuple[int, str]]:
    """Processes of this trial still running ``wait`` seconds after its command ended (then killed)."""
    deadline = time.monotonic() + wait
    while True:
        left = tagged(tag)
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    for pid, _ in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    return left


def env_for(tag: str) -> dict:
    env = dict(os.environ)
    env.update({TAG: tag, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "VAELAB_QUIET": "1",
                "PYTHONUNBUFFERED": "1"})
    return env


def start(cmd: list[str], tag: str, log: Path) -> subprocess.Popen:
    fh = open(log, "ab")
    fh.write(f"\n$ {' '.join(cmd)}\n".encode())
    fh.flush()
    return subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env_for(tag), cwd=str(log.parent),
                            start_new_session=True)


def last_error(log: Path) -> str:
    lines = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    errs = [ln for ln in lines if "error" in ln.lower() or "Traceback" in ln]
    return (errs[-1] if errs else (lines[-1] if lines else ""))[:160]


# ------------------------------------------------------------------ the commands
def vaelab(*args) -> list[str]:
    return [sys.executable, "-m", "vaelab", *map(str, args)]


def common_sets(steps: int, every: int) -> list[str]:
    sets = {"data.root": NPZ, "model.net_options": "{hidden=64}", "train.batch_size": 16,
            "train.checkpoint_every": every, "train.log_every": every, "train.keep_checkpoints": 2}
    out = ["--steps", str(steps), "--device", "cpu", "--quiet"]
    for k, v in sets.items():
        out += ["--set", f"{k}={v}"]
    return out


class Kind:
    name = ""

    def __init__(self, args, work: Path):
        self.args, self.work = args, work

    def command(self, folder: Path, attempt: int) -> list[str]:
        raise NotImplementedError

    def result(self, folder: Path):
        raise NotImplementedError


class Train(Kind):
    name = "train"

    def command(self, folder, attempt):
        run = folder / "run"
        resume = ["--resume"] if list((run / "checkpoints").glob("step-*")) else []
        return vaelab("train", PRESET, "--out", run, *common_sets(self.args.steps, self.args.every), *resume)

    def result(self, folder):
        return final_tensors(folder / "run", self.args.steps)


class Sweep(Kind):
    name = "sweep"

    def command(self, folder, attempt):
        out = folder / "sweep"
        resume = ["--resume"] if out.exists() else []
        return vaelab("sweep", PRESET, "--seeds", "0,1", "--out", out, "--mode", "sequential",
                      *common_sets(self.args.sweep_steps, self.args.every), *resume)

    def result(self, folder):
        runs = sorted(p for p in (folder / "sweep").iterdir() if (p / "config.toml").is_file())
        if len(runs) != 2:
            raise RuntimeError(f"{len(runs)} run folders in the sweep, expected 2")
        return {p.name: final_tensors(p, self.args.sweep_steps) for p in runs}


class Evaluate(Kind):
    name = "evaluate"

    def __init__(self, args, work):
        super().__init__(args, work)
        self.run = work / "evaluate-model" / "run"  # trained once, then only read

    def prepare(self):
        if not (self.run / "checkpoints").is_dir():
            self.run.parent.mkdir(parents=True, exist_ok=True)
            subprocess.run(vaelab("train", PRESET, "--out", self.run, *common_sets(self.args.steps, self.args.every)),
                           check=True, env=env_for("prepare"))

    def command(self, folder, attempt):
        return vaelab("evaluate", self.run, "--metrics", "mig,dci,sap", "--profile", "fast", "--jobs", "2",
                      "--out", folder / "eval.json", "--quiet")

    def result(self, folder):
        data = json.loads((folder / "eval.json").read_text())
        return {k: v for k, v in data.items() if k not in EVAL_VOLATILE}


def final_tensors(run: Path, steps: int) -> dict:
    from safetensors.numpy import load_file

    cks = sorted((run / "checkpoints").glob("step-*"))
    if not cks:
        raise RuntimeError(f"no checkpoint in {run}")
    step = int(cks[-1].name.split("-")[1])
    if step != steps:
        raise RuntimeError(f"{run.name}: newest checkpoint is step {step}, expected {steps}")
    return load_file(str(cks[-1] / "tensors.safetensors"))


def same(a, b) -> bool:
    import numpy as np

    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and a.dtype == b.dtype and \
            a.shape == b.shape and a.tobytes() == b.tobytes()
    return a == b


# ------------------------------------------------------------------ trials
def run_to_end(kind: Kind, folder: Path, tag: str, log: Path, max_restarts: int, timeout: float) -> tuple[int, list[int]]:
    """Start the command again until it exits 0; returns (restarts, exit codes)."""
    codes = []
    for attempt in range(1, max_restarts + 1):
        p = start(kind.command(folder, attempt), tag, log)
        try:
            rc = p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            rc = p.wait()
            codes.append(rc)
            continue
        codes.append(rc)
        if rc == 0:
            return attempt, codes
    return max_restarts, codes


def trial(kind: Kind, sig_name: str, folder: Path, ref, t_ref: float, rng: random.Random, args) -> dict:
    shutil.rmtree(folder, ignore_errors=True)  # a reused --workdir
    folder.mkdir(parents=True)
    tag = uuid.uuid4().hex
    log = folder / "log.txt"
    delay = rng.uniform(args.min_delay, max(args.min_delay + 0.1, 0.8 * t_ref))
    row = {"delay": delay, "landed": False, "finished": False, "identical": False, "left": [], "notes": []}
    p = start(kind.command(folder, 0), tag, log)
    try:
        p.wait(timeout=delay)
        row["notes"].append(f"ended (rc {p.returncode}) before the signal at {delay:.1f} s")
    except subprocess.TimeoutExpired:
        sig = SIGNALS[sig_name]
        try:
            if sig == signal.SIGINT:
                os.killpg(p.pid, sig)  # Ctrl-C: the whole foreground group
            else:
                os.kill(p.pid, sig)
            row["landed"] = True
        except ProcessLookupError:
            pass
        try:
            rc = p.wait(timeout=args.stop_timeout)
            row["rc_interrupted"] = rc
        except subprocess.TimeoutExpired:
            row["notes"].append(f"still running {args.stop_timeout:.0f} s after SIG{sig_name}: killed")
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
    if row["landed"]:
        left = leftovers(tag, wait=args.orphan_wait)  # nothing of the interrupted command may outlive it
        if left:
            row["left"] += left
            row["notes"].append(f"{len(left)} process(es) outlived the interrupted command")
    restarts, codes = run_to_end(kind, folder, tag, log, args.max_restarts, args.timeout)
    row["restarts"], row["codes"] = restarts, codes
    row["finished"] = bool(codes) and codes[-1] == 0
    if not row["finished"]:
        row["notes"].append(f"never finished (exit codes {codes}): {last_error(log)}")
    row["left"] += leftovers(tag, wait=args.orphan_wait)
    if row["finished"]:
        try:
            row["identical"] = same(kind.result(folder), ref)
            if not row["identical"]:
                row["notes"].append("differs from the uninterrupted reference")
        except Exception as e:  # a missing or unreadable result is a finding, not a crash of the soak
            row["notes"].append(f"result unreadable: {type(e).__name__}: {e}"[:160])
    stray = [str(p.relative_to(folder)) for p in folder.rglob("*") if p.name.endswith((".tmp", ".part"))
             or ".tmp-" in p.name]
    if stray:
        row["notes"].append(f"temporary files left: {', '.join(stray[:3])}")
    return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=2, help="trials per (command, signal) (default 2)")
    ap.add_argument("--kinds", default="train,sweep,evaluate")
    ap.add_argument("--signals", default="KILL,INT,TERM")
    ap.add_argument("--steps", type=int, default=300, help="training steps (train, and the evaluated model)")
    ap.add_argument("--sweep-steps", type=int, default=150, help="training steps of each sweep run")
    ap.add_argument("--every", type=int, default=25, help="checkpoint_every (and log_every)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the random delays")
    ap.add_argument("--min-delay", type=float, default=0.5, help="shortest delay before the signal, seconds")
    ap.add_argument("--max-restarts", type=int, default=4)
    ap.add_argument("--timeout", type=float, default=600, help="seconds one command may take")
    ap.add_argument("--stop-timeout", type=float, default=60, help="seconds a SIGINT/SIGTERM may take to stop it")
    ap.add_argument("--orphan-wait", type=float, default=5, help="seconds a stray process gets to end on its own")
    ap.add_argument("--workdir", help="where the trials go (default: a temporary folder, removed unless --keep)")
    ap.add_argument("--keep", action="store_true", help="keep the work folder")
    args = ap.parse_args(argv)
    if not NPZ.is_file():
        print(f"soak: the dSprites subset is missing ({NPZ}); set VAELAB_TEST_DATA", file=sys.stderr)
        return 2
    kinds = {"train": Train, "sweep": Sweep, "evaluate": Evaluate}
    chosen = [k.strip() for k in args.kinds.split(",") if k.strip()]
    sigs = [s.strip().upper().removeprefix("SIG") for s in args.signals.split(",") if s.strip()]
    bad = [k for k in chosen if k not in kinds] + [s for s in sigs if s not in SIGNALS]
    if bad:
        print(f"soak: unknown {', '.join(bad)} (kinds: {', '.join(kinds)}; signals: {', '.join(SIGNALS)})",
              file=sys.stderr)
        return 2
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="vaelab-soak-"))
    work.mkdir(parents=True, exist_ok=True)
    rng = random.Random(args.seed)
    rows = []
    try:
        for name in chosen:
            kind = kinds[name](args, work)
            if hasattr(kind, "prepare"):
                kind.prepare()
            ref_dir = work / name / "reference"
            shutil.rmtree(ref_dir, ignore_errors=True)
            ref_dir.mkdir(parents=True)
            tag = uuid.uuid4().hex
            t0 = time.perf_counter()
            restarts, codes = run_to_end(kind, ref_dir, tag, ref_dir / "log.txt", 1, args.timeout)
            t_ref = time.perf_counter() - t0
            if codes != [0]:
                print(f"soak: the uninterrupted {name} failed (exit {codes}): {last_error(ref_dir / 'log.txt')}",
                      file=sys.stderr)
                rows.append((name, "-", {"ref_failed": True}))
                continue
            ref = kind.result(ref_dir)
            left = leftovers(tag)
            print(f"{name}: reference {t_ref:.1f} s" + (f"; {len(left)} process(es) left!" if left else ""), flush=True)
            for sig_name in sigs:
                for i in range(args.n):
                    row = trial(kind, sig_name, work / name / f"{sig_name}-{i}", ref, t_ref, rng, args)
                    rows.append((name, sig_name, row))
                    verdict = "ok" if row["finished"] and row["identical"] and not row["left"] else "FAIL"
                    print(f"  {name} SIG{sig_name} #{i}: signal at {row['delay']:.1f} s"
                          f"{'' if row['landed'] else ' (too late)'}, exit codes {row.get('rc_interrupted', '-')} "
                          f"then {row['codes']}: {verdict}" + (f" — {'; '.join(row['notes'])}" if row["notes"] else ""),
                          flush=True)
    finally:
        if not args.keep and not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
        elif args.keep:
            print(f"work folder kept: {work}")
    return report(rows)


def report(rows) -> int:
    print()
    head = f"{'command':<9} {'signal':<7} {'trials':>6} {'landed':>6} {'finished':>8} {'identical':>9} " \
           f"{'left':>5} {'restarts':>8}  verdict"
    print(head)
    print("-" * len(head))
    groups: dict = {}
    for name, sig, row in rows:
        groups.setdefault((name, sig), []).append(row)
    failed = False
    for (name, sig), rs in groups.items():
        if rs[0].get("ref_failed"):
            print(f"{name:<9} {'-':<7} {'':>6} {'':>6} {'':>8} {'':>9} {'':>5} {'':>8}  reference run failed")
            failed = True
            continue
        landed = sum(r["landed"] for r in rs)
        fin = sum(r["finished"] for r in rs)
        ident = sum(r["identical"] for r in rs)
        left = sum(len(r["left"]) for r in rs)
        restarts = sum(r["restarts"] for r in rs)
        ok = fin == len(rs) and ident == len(rs) and left == 0
        failed |= not ok
        print(f"{name:<9} {'SIG' + sig:<7} {len(rs):>6} {landed:>6} {fin:>8} {ident:>9} {left:>5} {restarts:>8}  "
              f"{'pass' if ok else 'FAIL'}")
    notes = [(name, sig, n) for name, sig, r in rows if not r.get("ref_failed") for n in r["notes"]]
    if notes:
        print("\nnotes:")
        for name, sig, n in notes:
            print(f"  {name} SIG{sig}: {n}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
