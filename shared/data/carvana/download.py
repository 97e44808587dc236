"""Downloading the Carvana zips from Kaggle (DatasetFetcher), every failure turned into one sentence."""
from __future__ import annotations

import contextlib
import errno
import io
import os
import shutil
import socket
import zipfile
from collections.abc import Callable, Iterable
from pathlib import Path

from shared.data.carvana.layout import _cache_root
from shared.errors import DataError, UserError, one_line

COMPETITION = "carvana-image-masking-challenge"
DEFAULT_FILES = ("train.zip", "train_masks.zip", "train_masks.csv.zip", "test.zip", "sample_submission.csv.zip")


def default_download_dir() -> Path:
    """Where --download puts Kaggle's zips: <cache>/carvana-download."""
    return _cache_root() / "carvana-download"


def _have_kaggle_credentials() -> bool:
    """Whether any credential the kaggle package accepts is present, checked without importing it."""
    env = os.environ
    if env.get("KAGGLE_API_TOKEN") or (env.get("KAGGLE_USERNAME") and env.get("KAGGLE_KEY")):
        return True
    config_dir = Path(env.get("KAGGLE_CONFIG_DIR") or Path.home() / ".kaggle")
    return any((config_dir / name).is_file() for name in ("kaggle.json", "access_token", "credentials.json"))


def _kaggle_client():
    """An authenticated KaggleApi; imported here because `import kaggle` authenticates at import time."""
    if not _have_kaggle_credentials():
        raise _MissingCredentials()
    # The kaggle package prints its own multi-line help and calls exit(1) when it cannot
    # authenticate; keep that off the console, the caller turns it into one sentence.
    with contextlib.redirect_stdout(io.StringIO()):
        from kaggle.api.kaggle_api_extended import KaggleApi
        api = KaggleApi()
        try:
            api.authenticate()
        except SystemExit as exc:
            raise _MissingCredentials() from exc
    return api


class _MissingCredentials(Exception):
    """No usable Kaggle credentials."""


_NETWORK_ERROR_NAMES = {"ConnectionError", "ConnectTimeout", "ReadTimeout", "Timeout", "MaxRetryError",
                        "NewConnectionError", "NameResolutionError", "ProtocolError", "SSLError", "ProxyError"}


def _http_status(exc: BaseException) -> int | None:
    """The HTTP status of a failed request: requests' HTTPError (.response) or the older ApiException (.status)."""
    status = getattr(exc, "status", None)
    if status is None:
        status = getattr(getattr(exc, "response", None), "status_code", None)
    try:
        return int(status) if status is not None else None
    except (TypeError, ValueError):
        return None


def _is_network_error(exc: BaseException) -> bool:
    if isinstance(exc, (ConnectionError, TimeoutError, socket.gaierror, socket.timeout)):
        return True
    return any(cls.__name__ in _NETWORK_ERROR_NAMES for cls in type(exc).__mro__)


class DatasetFetcher:
    """Downloads the Carvana zips from Kaggle with the official kaggle package and its API token."""

    def __init__(self, competition: str = COMPETITION, client_factory: Callable[[], object] | None = None):
        self.competition = competition
        # A factory, not a client: the real one authenticates, which tests replace with a fake.
        self.client_factory = client_factory or _kaggle_client

    def _user_error(self, exc: BaseException, file_name: str) -> UserError:
        """One sentence that says what to do, for whatever the download raised."""
        manual = "download the zips yourself and pass their folder with --data-dir"
        rules = f"https://www.kaggle.com/c/{self.competition}/rules"
        status = _http_status(exc)
        text = one_line(exc).lower()
        if isinstance(exc, (_MissingCredentials, SystemExit)) or status == 401 or (
                status is None and ("kaggle.json" in text or "credential" in text or "authenticat" in text)):
            return UserError("Kaggle did not accept your credentials (none found, or invalid): create an API token "
                             "at kaggle.com (Account > API) and save it as ~/.kaggle/kaggle.json, or set "
                             "KAGGLE_USERNAME and KAGGLE_KEY (or KAGGLE_API_TOKEN).")
        if status == 403:
            return UserError(f"Kaggle refused {file_name} (HTTP 403): accept the competition rules at {rules}, "
                             "then retry.")
        if status == 404:
            return UserError(f"Kaggle has no {file_name} in competition {self.competition} (HTTP 404): "
                             f"check the name, or {manual}.")
        if status is not None:
            return UserError(f"Kaggle answered HTTP {status} for {file_name}: retry later, or {manual}.")
        if _is_network_error(exc):
            return UserError(f"Could not reach Kaggle to download {file_name}: check your network, or {manual}.")
        if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
            return UserError(f"No space left to download {file_name}: free some space, or {manual}.")
        if isinstance(exc, PermissionError):
            return UserError(f"Cannot write {file_name} ({one_line(exc)}): choose a writable folder for the download.")
        return UserError(f"Downloading {file_name} from Kaggle failed ({type(exc).__name__}: {one_line(exc)}): "
                         f"retry, or {manual}.")

    def download_dataset(self, dest_dir: str | os.PathLike, files: Iterable[str] = DEFAULT_FILES) -> Path:
        """Download the named competition files into dest_dir (those already there are kept) and return it.

        Each file arrives in dest_dir/.partial/ and is moved into place only when complete, so a
        broken download is fetched again next time. Every failure becomes a one-sentence UserError.
        """
        dest = Path(dest_dir).expanduser()
        try:
            dest.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"Cannot create the download folder {dest} ({one_line(exc)}): "
                            "choose a writable folder.") from exc
        missing = [name for name in files if not _is_complete(dest / name)]
        if not missing:
            return dest
        try:
            client = self.client_factory()
        except (Exception, SystemExit) as exc:  # kaggle's authenticate() calls exit(1) without credentials
            raise self._user_error(exc, missing[0]) from exc
        partial = dest / ".partial"
        for name in missing:
            try:
                partial.mkdir(exist_ok=True)
                client.competition_download_file(self.competition, name, path=str(partial))
                got = partial / name
                if not got.is_file() and (partial / f"{name}.zip").is_file():
                    got = partial / f"{name}.zip"  # Kaggle wraps large files in a zip of their own
                if not _is_complete(got):
                    raise DataError(got, "download is incomplete or not a valid zip; run again to retry")
                os.replace(got, dest / got.name)
            except UserError:
                raise
            except Exception as exc:
                raise self._user_error(exc, name) from exc
        shutil.rmtree(partial, ignore_errors=True)
        return dest


def _is_complete(path: Path) -> bool:
    """A downloaded file that is there and whole: a zip must have its central directory."""
    if not path.is_file() or path.stat().st_size == 0:
        return False
    return zipfile.is_zipfile(path) if path.suffix == ".zip" else True
