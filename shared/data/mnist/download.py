"""Downloading the four gzipped MNIST IDX files from public mirrors into a cache, checked against their MD5."""
from __future__ import annotations

import hashlib
import http.client
import os
import tempfile
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path

from shared.data.mnist.discovery import MNIST_FILES
from shared.errors import DataError, UserError, one_line

# Public mirrors, tried in order; the original site often refuses robots, so it comes last.
DEFAULT_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)
# MD5 of the gzipped files, as published with torchvision.
MNIST_MD5 = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}


def default_cache_dir() -> Path:
    """~/.cache/twinnets/mnist, or $TWINNETS_CACHE/mnist when that variable is set."""
    root = os.environ.get("TWINNETS_CACHE")
    return (Path(root).expanduser() if root else Path.home() / ".cache" / "twinnets") / "mnist"


def _md5_of(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _fetch(url: str, folder: Path, name: str, timeout: float) -> tuple[Path, str]:
    """Download url into a temp file in folder; returns (temp path, md5). Network errors propagate."""
    digest = hashlib.md5()
    handle, temp_name = tempfile.mkstemp(prefix=name + ".", suffix=".part", dir=folder)
    temp = Path(temp_name)
    try:
        with os.fdopen(handle, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
            for chunk in iter(lambda: response.read(1 << 20), b""):
                digest.update(chunk)
                out.write(chunk)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return temp, digest.hexdigest()


def download_mnist(
    cache_dir: str | os.PathLike | None = None,
    mirrors: Sequence[str] | None = None,
    md5: Mapping[str, str] | None = None,
    timeout: float = 30.0,
) -> Path:
    """Fetch the four gzipped IDX files into cache_dir (default default_cache_dir()) and return that folder.

    Mirrors are tried in order. md5 maps each .gz file name to its checksum (default MNIST_MD5;
    a name absent from it is not checked). Files already there with the right checksum are kept;
    each new file is written to a temp file and renamed, so an interrupted run leaves no half file.
    No mirror reachable: UserError saying what to do. Checksum mismatch: DataError naming the file.
    """
    folder = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    mirrors = list(DEFAULT_MIRRORS if mirrors is None else mirrors)
    checksums = dict(MNIST_MD5 if md5 is None else md5)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise DataError(folder, f"cannot create the download folder ({one_line(error, name_if_empty=True)})") from None

    for name in (base + ".gz" for base in MNIST_FILES.values()):
        target = folder / name
        expected = checksums.get(name)
        if target.is_file() and (expected is None or _md5_of(target) == expected):
            continue  # already downloaded and verified

        failures: list[str] = []
        mismatch: str | None = None
        for mirror in mirrors:
            url = mirror.rstrip("/") + "/" + name
            try:
                temp, digest = _fetch(url, folder, name, timeout)
            except (OSError, http.client.HTTPException, ValueError) as error:
                # URLError/HTTPError/timeouts are OSErrors; a malformed URL is a ValueError.
                failures.append(f"{url}: {one_line(error, name_if_empty=True)}")
                continue
            if expected is not None and digest != expected:
                temp.unlink(missing_ok=True)
                mismatch = f"MD5 checksum {digest} from {url} does not match the expected {expected}"
                continue  # another mirror may hold a good copy
            try:
                os.replace(temp, target)
            except OSError as error:
                temp.unlink(missing_ok=True)
                reason = one_line(error, name_if_empty=True)
                raise DataError(target, f"cannot write the downloaded file ({reason})") from None
            break
        else:
            if mismatch is not None:
                raise DataError(target, mismatch)
            reasons = "; ".join(failures) or "no mirrors given"
            raise UserError(
                f"could not download {name} from any mirror ({reasons}); check your network or download "
                f"the four MNIST IDX files yourself and pass their folder with --data-dir"
            )
    return folder
