"""Ray: vaelab's work as tasks on a cluster (DESIGN "Scale out": many runs on many machines).

:class:`RaySession` joins the cluster at ``address`` (``auto``, ``ray://...``) or starts a local Ray
for a ``with`` block and stops it afterwards; its :meth:`~RaySession.map` runs ``fn(*args)`` for every
argument tuple as a Ray task and yields ``(index, result)`` as tasks finish. A task that raises ends
the whole map with one :class:`VaelabError` line (the task's own message when it was a VaelabError). ``fn`` must be
importable by the workers (a module-level function of an installed vaelab); the paths it reads and
writes must be on a file system every node sees. VAELAB_DATA / VAELAB_QUIET travel to the workers.
"""
from __future__ import annotations

import logging
import os
from typing import Callable, Iterator, Sequence

from .errors import VaelabError

__all__ = ["RaySession"]


def _ray():
    try:
        import ray
    except ImportError:
        raise VaelabError("--backend ray needs Ray: pip install 'vaelab[ray]' (or pip install ray)") from None
    return ray


class RaySession:
    """Ray joined (``address``) or started for a ``with`` block; stopped at its end only when this
    session started it. ``gpus``: the cluster's GPU count; :meth:`map` runs the tasks."""

    def __init__(self, address: str | None = None, quiet: bool = False):
        self.address, self.quiet = address, quiet
        self.ray = _ray()
        self.own = False

    def __enter__(self) -> "RaySession":
        if not self.ray.is_initialized():
            env = {k: os.environ[k] for k in ("VAELAB_DATA", "VAELAB_QUIET") if k in os.environ}
            try:
                self.ray.init(address=self.address, include_dashboard=False, log_to_driver=False,
                              logging_level=logging.ERROR if self.quiet else logging.WARNING,
                              runtime_env={"env_vars": env} if env else None)
            except (ConnectionError, RuntimeError, ValueError) as e:
                raise VaelabError(f"cannot start or reach Ray at {self.address or 'a new local instance'}: "
                                  f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
            self.own = True
        return self

    def __exit__(self, *exc):
        if self.own:
            self.ray.shutdown()
            self.own = False

    @property
    def gpus(self) -> float:
        return float(self.ray.cluster_resources().get("GPU", 0))

    def map(self, fn: Callable, args: Sequence[tuple], *, num_gpus: float = 0, num_cpus: float = 1,
            what: str = "task") -> Iterator[tuple[int, object]]:
        """Yield ``(i, fn(*args[i]))`` as the tasks finish; a failed task raises one VaelabError line."""
        ray = self.ray
        task = ray.remote(fn).options(num_gpus=num_gpus, num_cpus=num_cpus, max_retries=0)
        refs = {task.remote(*a): i for i, a in enumerate(args)}
        pending = list(refs)
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            try:
                value = ray.get(ready[0])
            except ray.exceptions.RayTaskError as e:
                for ref in pending:  # the map ends here: do not leave the others running
                    ray.cancel(ref, force=True)
                cause = getattr(e, "cause", None)
                if isinstance(cause, VaelabError):  # its own line, in both wordings (API and command line)
                    raise cause.prefixed(f"a {what} failed on Ray: ") from None
                msg = f"{type(cause or e).__name__}: {cause or e}"
                raise VaelabError(f"a {what} failed on Ray: {msg.strip().splitlines()[0]}") from None
            yield refs[ready[0]], value
