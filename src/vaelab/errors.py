"""Errors a user can cause.

Anything raised as :class:`VaelabError` is printed by the CLI as one line
(``vaelab: error: ...``) and ends the process with exit code 2.  Library code
raises it for bad input (missing files, unknown names, corrupt data, bad
overrides); programming errors stay ordinary exceptions with tracebacks.
"""


class VaelabError(Exception):
    """A problem with the user's input: one clear line, exit code 2.

    A message that tells the user what to pass names arguments, and those differ between the Python API
    (``resume=True``, ``run_dir=``) and the command line (``--resume``, ``--out``): ``str(e)`` is the
    message in the API's words, ``e.cli`` the same message in the command's words (None when the message
    names no argument). Build such errors with :func:`naming`; the CLI prints ``e.for_cli()``."""

    def __init__(self, *args, cli: str | None = None):
        super().__init__(*args)
        self.cli = cli

    def for_cli(self) -> str:
        """The message as the command line prints it (its --flags where the message names arguments)."""
        return self.cli if self.cli is not None else str(self)

    def prefixed(self, prefix: str) -> "VaelabError":
        """A copy with ``prefix`` before both wordings (e.g. the run a sweep was training)."""
        return type(self)(f"{prefix}{self}", cli=None if self.cli is None else f"{prefix}{self.cli}")


def naming(template: str, **fields) -> VaelabError:
    """A :class:`VaelabError` whose message names arguments, in both wordings.

    ``template`` is a ``str.format`` template; each field is either ``(python, cli)`` — how the Python
    API and the command line spell the same argument, e.g. ``resume=("resume=True", "--resume")`` — or
    a plain value shown the same in both (a path, a count)::

        raise naming("{run} already holds a run; pass {resume} to continue it", run=path,
                     resume=("resume=True", "--resume"))
    """
    api = {k: v[0] if isinstance(v, tuple) else v for k, v in fields.items()}
    cli = {k: v[1] if isinstance(v, tuple) else v for k, v in fields.items()}
    return VaelabError(template.format(**api), cli=template.format(**cli))


def closest(name: str, choices) -> str:
    """Return ' (did you mean X?)' for the closest of ``choices`` to ``name``, or ''."""
    import difflib

    match = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.5)
    return f" (did you mean {match[0]!r}?)" if match else ""
