"""User-facing errors.

A `DelphiError` is a mistake the user can fix (bad input, impossible budget, corrupt file).
The CLI prints its message as one line on stderr and exits with code 2: no traceback.
Anything else that escapes is a bug in Delphi and keeps its traceback.
"""


class DelphiError(Exception):
    """A user error: message says what is wrong and how to fix it."""

    exit_code = 2
