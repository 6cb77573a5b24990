"""The ``vaelab`` command: a thin layer over the Python API.

Each module in this package adds its subcommands with ``register(subparsers)`` and sets
``func(args) -> int | None`` on them. Errors a user can cause (:class:`VaelabError`) print one
line and exit 2; argparse's own usage errors also exit 2.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import signal
import sys
import warnings

from ..errors import VaelabError

# subcommand modules, in the order `vaelab --help` lists them
_COMMAND_MODULES = ("train", "evaluate", "encode", "viz", "explore", "experiment", "sweep", "study", "data", "imports")


def seed(text: str) -> int:
    """argparse type of every --seed: numpy's generators take non-negative integers only."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid seed {text!r}: a non-negative integer") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"invalid seed {value}: a non-negative integer")
    return value


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2 (argparse prints usage first otherwise)
        sys.stderr.write(f"vaelab: error: {message}\n")
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = _Parser(prog="vaelab", description="Train, inspect and score disentangled VAEs.")
    parser.add_argument("--version", action="version", version=f"vaelab {__version__}")
    parser.add_argument("--data-dir", help="data directory (default: $VAELAB_DATA or ~/.cache/vaelab/data)")
    parser.add_argument("--plugin", dest="plugins_before", action="append", default=[], metavar=_PLUGIN_METAVAR,
                        help=_PLUGIN_HELP)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in _COMMAND_MODULES:
        importlib.import_module(f"{__name__}.{name}").register(sub)
    _add_plugin_option(sub)
    return parser


_PLUGIN_METAVAR = "FILE.py|MODULE"
_PLUGIN_HELP = ("import a plugin that registers objectives, metrics, nets or datasets (repeatable; the runs "
                "trained by this command record it in their config.toml)")


def _add_plugin_option(subparsers) -> None:
    """--plugin on every subcommand (and theirs): a global option, given before or after the subcommand."""
    for p in set(subparsers.choices.values()):
        p.add_argument("--plugin", dest="plugins_after", action="append", default=argparse.SUPPRESS,
                       metavar=_PLUGIN_METAVAR, help=_PLUGIN_HELP)
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                _add_plugin_option(action)


def _run_plugins(args) -> None:
    """Load the plugins recorded by the runs the command reads (its RUN / SWEEP arguments)."""
    from .. import plugins

    for key in ("run", "runs"):
        value = getattr(args, key, None)
        if isinstance(value, (str, list)) and value:
            plugins.load_for_runs(value)


@contextlib.contextmanager
def _interrupts_stop_the_command():
    """SIGINT and SIGTERM end every subcommand as Ctrl-C does: through its clean-up (DCI's worker processes,
    the explorer's socket) to one line and exit 130. Installed explicitly: a shell starts background jobs
    with SIGINT ignored, and Python then raises no KeyboardInterrupt of its own. The training loop nests its
    own handlers (they stop it between iterations, with a checkpoint)."""
    def interrupt(signum, frame):
        raise KeyboardInterrupt

    try:
        previous = {s: signal.signal(s, interrupt) for s in (signal.SIGINT, signal.SIGTERM)}
    except ValueError:  # not the main thread (main() called from a thread): leave signals alone
        yield
        return
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


class _one_line_warnings(warnings.catch_warnings):
    """vaelab's own warnings (DataWarning, ...) as one ``vaelab: warning:`` line on stderr, in every
    subcommand; other libraries' warnings are shown as Python shows them."""

    def __enter__(self):
        out = super().__enter__()
        original = warnings.showwarning

        def show(message, category, filename, lineno, file=None, line=None):
            if category.__module__.split(".")[0] == "vaelab":
                sys.stderr.write(f"vaelab: warning: {message}\n")
            else:
                original(message, category, filename, lineno, file, line)

        warnings.showwarning = show
        return out


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        if args.data_dir:
            from ..paths import require_folder, set_data_dir

            set_data_dir(require_folder(args.data_dir, "--data-dir", "the data"))
        from .. import plugins

        given = list(args.plugins_before) + list(getattr(args, "plugins_after", None) or [])
        with plugins.from_command_line(given), _one_line_warnings(), _interrupts_stop_the_command():  # recorded in the runs it trains
            _run_plugins(args)
            rc = args.func(args)
    except VaelabError as e:
        sys.stderr.write(f"vaelab: error: {e.for_cli()}\n")  # the message in the command's words (--flags)
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("vaelab: interrupted\n")
        return 130
    except OSError as e:  # a path the user gave that cannot be written or read (a file where a folder goes, ...)
        if e.filename is None:
            raise
        where = f"{e.filename}" + (f" -> {e.filename2}" if e.filename2 else "")
        sys.stderr.write(f"vaelab: error: {where}: {e.strerror or type(e).__name__}\n")
        return 2
    return int(rc or 0)


if __name__ == "__main__":  # python -m vaelab.cli
    sys.exit(main())
