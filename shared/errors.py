"""The errors a user can cause; compare.py turns each into a one-line message and an exit status."""


class UserError(Exception):
    """Bad input from the user (a flag, a file, a folder): one line, exit status 2."""

    exit_status = 2


class TrainingDiverged(UserError):
    """The loss stopped being a finite number: training stops, exit status 3."""

    exit_status = 3


class DataError(UserError):
    """A data file that is missing, truncated or malformed; the message names the file."""

    def __init__(self, path, problem: str):
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem

    def __reduce__(self):
        """Picklable with its two arguments, so a DataLoader worker process can hand it back."""
        return type(self), (self.path, self.problem)
