"""Errors a user can act on.

Library code raises :class:`GrefelError` (or a subclass) with a one-line message that says what is
wrong and what to do. The CLI prints that line (no traceback) and exits with status 1. Anything
else that escapes is a bug and keeps its traceback.
"""


class GrefelError(Exception):
    """A problem with the user's input or environment, described in one actionable line."""


class DatasetError(GrefelError):
    """A raw or prepared dataset is missing, in an unknown layout, or inconsistent."""


class CheckpointError(GrefelError):
    """A checkpoint or weight file is missing, truncated or does not fit the model / dataset."""
