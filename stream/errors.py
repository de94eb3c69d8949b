"""The base of every error a user can fix: the CLI prints its message as one line, no traceback."""


class SeqsentryError(Exception):
    """An error with a message that says what to do."""
