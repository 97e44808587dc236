"""The resumable, streamed submission of one side: rows appended to a plain CSV part file, a small progress.json
(written atomically, after the rows it counts are flushed) that says how many bytes of the part are complete and
which photo comes next; the gzip is made once, at the end. A kill at any point loses at most the rows written since
the last progress.json, which a resumed run truncates away and predicts again: the finished file is byte for byte
the one an uninterrupted run writes."""
from __future__ import annotations

import gzip
import json
import os
import shutil
import time
from pathlib import Path

from shared.atomic import atomic_path, write_json
from shared.rle import CSV_HEADER

PART, PROGRESS = "submit.csv.part", "progress.json"
SYNC_EVERY_S = 1.0  # how often the part is flushed and synced and progress.json replaced


class ResumableRows:
    """Appends rows to <folder>/submit.csv.part and records progress; `start` is the first photo still to do."""

    def __init__(self, folder: Path, header: tuple[str, ...] = CSV_HEADER):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.part, self.progress_path = self.folder / PART, self.folder / PROGRESS
        for stale in self.folder.glob(".submit.csv.gz.*.tmp"):  # a gzip a kill interrupted
            stale.unlink(missing_ok=True)
        state = self._saved()
        if state is None:  # a fresh start (or a part left without its progress: it counts nothing)
            with open(self.part, "wb") as handle:
                handle.write((",".join(header) + "\n").encode())
            state = {"next": 0, "rows": 0, "bytes": self.part.stat().st_size, "skipped": [], "seconds": 0.0,
                     "predict_seconds": 0.0, "first_batch_s": None, "resumed": 0}
        else:
            state["resumed"] += 1
        self.state = state
        self.resumed_from = state["next"]
        self._handle = open(self.part, "r+b")
        self._handle.truncate(state["bytes"])  # rows after the last progress.json are predicted again
        self._handle.seek(state["bytes"])
        self._synced = -float("inf")  # the first batch is synced at once: progress shows from the start

    def _saved(self) -> dict | None:
        """The progress a killed run left, if its part file still holds every byte it counts."""
        if not self.progress_path.is_file() or not self.part.is_file():
            return None
        state = json.loads(self.progress_path.read_text())
        return state if self.part.stat().st_size >= state["bytes"] else None

    @property
    def start(self) -> int:
        return self.state["next"]

    def add(self, rows: list[str], next_photo: int, skipped: list[dict], seconds: float, predict_seconds: float,
            force: bool = False) -> None:
        """Append one batch's rows ("name,rle\\n" each), then, at most every SYNC_EVERY_S (and when forced), make
        them durable and record that photos up to next_photo are done."""
        self._handle.write("".join(rows).encode())
        self.state.update(next=next_photo, rows=self.state["rows"] + len(rows), skipped=self.state["skipped"] + skipped,
                          seconds=self.state["seconds"] + seconds,
                          predict_seconds=self.state["predict_seconds"] + predict_seconds)  # on disk at the next sync
        if force or time.monotonic() - self._synced >= SYNC_EVERY_S:
            self.sync()

    def note_first_batch(self, seconds: float) -> None:
        if self.state["first_batch_s"] is None:
            self.state["first_batch_s"] = seconds

    def sync(self) -> None:
        self._handle.flush()
        os.fsync(self._handle.fileno())
        self.state["bytes"] = self._handle.tell()
        write_json(self.progress_path, self.state)
        self._synced = time.monotonic()

    def finish(self, path: Path) -> Path:
        """The complete part gzipped (mtime 0: the same rows give the same bytes) into `path`, atomically; the
        part and the progress are dropped after."""
        self.sync()
        self._handle.close()
        with atomic_path(path) as temporary:
            with open(self.part, "rb") as source, open(temporary, "wb") as raw:
                with gzip.GzipFile(filename=path.name.removesuffix(".gz"), mode="wb", fileobj=raw, mtime=0,
                                   compresslevel=6) as packed:
                    shutil.copyfileobj(source, packed, 1 << 20)
                raw.flush()
                os.fsync(raw.fileno())
        return path

    def close(self) -> None:
        if not self._handle.closed:
            self._handle.close()


def drop_progress(folder: Path) -> None:
    """After the side's result is written: the part and its progress are no longer needed."""
    (Path(folder) / PART).unlink(missing_ok=True)
    (Path(folder) / PROGRESS).unlink(missing_ok=True)
