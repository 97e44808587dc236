"""The errors a user can cause; compare.py turns each into a one-line message and an exit status."""
from __future__ import annotations


def one_line(text: object, name_if_empty: bool = False) -> str:
    """text (an exception, usually) collapsed to one line, for messages that must never span lines.

    name_if_empty: an exception without text gives its type name instead of "", so the message still says something.
    """
    line = " ".join(str(text).split())
    return line or (type(text).__name__ if name_if_empty else "")


def _own_words(message: str) -> str:
    """PyTorch's DataLoader re-creates an error raised in a worker process from one text, the whole traceback
    ("Caught DataError in DataLoader worker process 0. Original Traceback ..."); keep what the error said."""
    if message.startswith("Caught ") and "Original Traceback" in message:
        last = message.rstrip().splitlines()[-1]  # "shared.errors.DataError: <path>: <problem>"
        return last.split(": ", 1)[1] if ": " in last else last
    return message


class UserError(Exception):
    """Bad input from the user (a flag, a file, a folder): one line, exit status 2."""

    exit_status = 2

    def __init__(self, message: str):
        super().__init__(_own_words(str(message)))


class TrainingDiverged(UserError):
    """The loss stopped being a finite number: training stops, exit status 3."""

    exit_status = 3


class DataError(UserError):
    """A data file that is missing, truncated or malformed; the message names the file."""

    def __init__(self, path, problem: str | None = None):
        if problem is None:  # re-created from a message alone (see _own_words)
            path, _, problem = _own_words(str(path)).partition(": ")
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem

    def __reduce__(self):
        """Picklable with its two arguments, so it can cross a process boundary whole."""
        return type(self), (self.path, self.problem)


def os_error_line(error: OSError) -> str:
    """An operating system's refusal (no space left, no permission, a read-only place) as one line naming the path."""
    where = error.filename if error.filename is not None else "a file"
    return f"{where}: {error.strerror or one_line(error, name_if_empty=True)}"
