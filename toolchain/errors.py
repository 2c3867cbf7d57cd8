"""The one exception type users see.

Anything raised as a `ToolchainError` is a problem with the user's input or environment: the CLI prints its
message as a single line (what is wrong and how to fix it) and exits with status 2, never a traceback.
"""


class ToolchainError(Exception):
    """A user-facing error whose message names the problem and the fix."""


def require(ok: bool, message: str) -> None:
    """Raise a `ToolchainError` with `message` unless `ok`: how configs check their values where they are made."""
    if not ok:
        raise ToolchainError(message)
