"""Every path a user gives, resolved once, in the parent, against the user's working directory: the workers start in
the checkout (where `python -m harness.worker` imports this project and nothing of the user's folder), so a relative
path they received would name another file there, or none."""
from __future__ import annotations

import argparse
import os
from pathlib import Path

# compare.py's flags that name a file or a folder (a list for --images), and the variables that do.
PATH_FLAGS = ("out", "data_dir", "init_weights", "weights", "images", "predict", "resume", "golden", "write_golden")
PATH_VARIABLES = ("TWINNETS_CACHE",)


def absolute(path: str | os.PathLike) -> Path:
    """The path from the working directory, ~ expanded, symlinks kept (a message names what the user gave)."""
    return Path(path).expanduser().absolute()


def resolve_user_paths(args: argparse.Namespace) -> argparse.Namespace:
    """args with every path flag absolute, and the path variables of this process's environment, which the workers
    inherit, likewise."""
    given = {flag: getattr(args, flag) for flag in PATH_FLAGS if getattr(args, flag, None) is not None}
    vars(args).update({flag: [absolute(item) for item in value] if isinstance(value, list) else absolute(value)
                       for flag, value in given.items()})
    for name in PATH_VARIABLES:
        if os.environ.get(name):
            os.environ[name] = str(absolute(os.environ[name]))
    return args
