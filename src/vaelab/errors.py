"""Errors a user can cause.

Anything raised as :class:`VaelabError` is printed by the CLI as one line
(``vaelab: error: ...``) and ends the process with exit code 2.  Library code
raises it for bad input (missing files, unknown names, corrupt data, bad
overrides); programming errors stay ordinary exceptions with tracebacks.
"""


class VaelabError(Exception):
    """A problem with the user's input: one clear line, exit code 2."""


def closest(name: str, choices) -> str:
    """Return ' (did you mean X?)' for the closest of ``choices`` to ``name``, or ''."""
    import difflib

    match = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.5)
    return f" (did you mean {match[0]!r}?)" if match else ""
