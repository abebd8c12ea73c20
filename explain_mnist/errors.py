"""The one exception that reaches the user as ``error: ...`` with exit code 2."""


class UserError(Exception):
    """Bad input or an unusable environment; the message says what is wrong and what to do."""
