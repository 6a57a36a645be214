"""The one exception type users see: its message is a single line saying what, where and how to fix."""


class LipsError(Exception):
    """Bad input or a missing resource. The CLI prints the message alone and exits 2."""
