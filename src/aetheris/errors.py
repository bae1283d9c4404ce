"""The one base class of expected user errors.

An error the user can fix (a missing file or folder, a bad key, option or value, a model the
tools cannot take) derives from `UserError`, and its message names the file, key or value and
what was expected. The `aetheris` command prints such an error as one `Error: ...` line on
stderr and exits with code 2; any other exception is a bug and keeps its traceback.

Subclasses also derive from the built-in type they used to be (`ValueError`,
`FileNotFoundError`, ...), so that `except ValueError` in callers keeps working.
"""

from __future__ import annotations


class UserError(Exception):
    """Raised for input the user can fix; the message is what the user reads."""

    def __str__(self) -> str:
        # KeyError would print its message quoted; a user error is read as plain text.
        return str(self.args[0]) if len(self.args) == 1 else super().__str__()


class MissingPathError(UserError, FileNotFoundError):
    """A file or folder the user named (or a configured one) does not exist."""


class BadValueError(UserError, ValueError):
    """A value the user gave (an option, a key in a file) is not one of those expected."""
