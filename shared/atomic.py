"""Atomic writes and JSON files: each file is built under a temporary name beside its target and renamed over
it when complete, so a reader (or a crash) never sees half a file."""
from __future__ import annotations

import json
import math
import os
import secrets
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np

UMASK = os.umask(0o022)  # read once (os.umask can only be read by setting it), then put back
os.umask(UMASK)


@contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = ".tmp") -> Iterator[Path]:
    """Yields a temporary path in the target's folder; the caller writes it (so it gets the umask's
    permissions, unlike mkstemp's 0600). Renamed over `path` if the block succeeds, removed otherwise.
    `suffix` matters to writers that pick the format from it (".png", ".keras")."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.parent / f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}{suffix}"
    try:
        yield temporary
        if temporary.is_file():  # some writers (safetensors) create their file 0600: give it the umask's mode
            os.chmod(temporary, 0o666 & ~UMASK)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def write_atomic(path: Path, text: str | bytes) -> Path:
    """Write to a temporary file beside `path`, then rename: a reader never sees half a file."""
    with atomic_path(path) as temporary:
        temporary.write_bytes(text.encode() if isinstance(text, str) else text)
    return Path(path)


def jsonable(value):
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, (np.floating, float)):
        value = float(value)
        return value if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, Path):
        return str(value)
    return value


def write_json(path: Path, data: dict) -> Path:
    return write_atomic(path, json.dumps(jsonable(data), indent=2) + "\n")
