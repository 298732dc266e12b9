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


def torch_load_failure(path, exc: BaseException) -> str:
    """A short reason why ``torch.load(path, weights_only=True)`` raised ``exc`` (for a CheckpointError).

    torch's own messages run to a paragraph (the ``weights_only`` one explains a version change);
    the user needs to know whether the file is incomplete, of another format, or holds objects.
    """
    import zipfile

    with open(path, "rb") as f:
        head = f.read(2)
    if not zipfile.is_zipfile(path) and head != b"\x80\x02":  # neither torch.save's zip nor its legacy pickle format
        return "not a complete torch.save file: truncated, or another format"
    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if msg.startswith("Weights only load failed"):
        return "it holds Python objects beyond tensors and plain containers, which weights_only loading refuses"
    return msg[:160]


def error_line(e: GrefelError) -> str:
    """The error's own one-line message. An error raised in a DataLoader worker comes back with
    torch's "Caught DatasetError in DataLoader worker process 0. Original Traceback ..." around it:
    its last line, ``grefel.core.errors.DatasetError: <message>``, without the class name."""
    text = str(e)
    if "Original Traceback" not in text:
        return text
    return text.strip().splitlines()[-1].split(": ", 1)[-1]
