"""The error type for bad input a user can fix. Pure: any layer may raise it.

Entry points print its message as one sentence (no traceback) and exit non-zero
(`beatgans.cli.errors.exit_on_user_error`); anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class UserError(ValueError):
    """Bad input (config value, file, directory): the message is one sentence that names the value or path
    and says what to change. Subclasses ValueError so callers that caught ValueError keep working."""
