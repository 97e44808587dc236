"""Atomic writes: build the file under a temporary name beside its target, rename it over the target
when complete, so a reader (or a crash) never leaves half a file behind."""
from __future__ import annotations

import os
import secrets
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


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
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
