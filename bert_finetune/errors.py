"""The one exception type for bad user input.

Library code raises `UserError` with a one-line message that names the offending file, line or
flag; the command-line entry points print it to stderr and exit non-zero, never a traceback.
"""


class UserError(Exception):
    """Bad input from the user: a file, a line of a file, a flag or a config value."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split("\n")))
