"""A data folder's fingerprint: its files' paths inside it and their sizes, hashed. A folder moved or copied keeps it;
a file added, removed, renamed or of another size changes it. What twinnets extracts into the folder is left out."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

from shared.data.carvana.layout import EXTRACTED


def fingerprint(folder: str | os.PathLike) -> dict:
    """{"files": count, "bytes": total size, "sha256": hash of every (path, size)}, walked in name order."""
    root = Path(folder)
    digest, files, total = hashlib.sha256(), 0, 0
    for directory, subfolders, names in os.walk(root):
        subfolders[:] = sorted(name for name in subfolders if not (Path(directory) == root and name == EXTRACTED))
        for name in sorted(names):
            path = Path(directory) / name
            size = path.stat().st_size
            digest.update(f"{path.relative_to(root).as_posix()}\0{size}\n".encode())
            files, total = files + 1, total + size
    return {"files": files, "bytes": total, "sha256": digest.hexdigest()}
