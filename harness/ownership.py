"""A run folder owned: locked while any process of the run lives, the names twinnets wrote in it listed (what
--overwrite replaces, and nothing of the user's), and an earlier run replaced only once the new one has started."""
from __future__ import annotations

import fcntl
import json
import os
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

from harness.surface import SIDES
from shared.atomic import write_json
from shared.errors import UserError

LOCK = ".twinnets.lock"  # held (flock) by the process that owns the run folder; the kernel drops it when it dies
OWNED = ".twinnets-owned.json"  # the names twinnets wrote at the folder's top level
ASIDE = ".twinnets-replaced"  # an earlier run moved aside by --overwrite, until the new run has started
BOOKKEEPING = (LOCK, OWNED, ASIDE)  # a folder holding only these holds nothing
RUN_MARKS = ("results.json", "job.json", "diagnose-job.json", "export.json")  # a twinnets run was (or is) here
# What a run writes, recognised by name in a folder whose list of owned names is missing (its run was killed
# before it could write the list, or an older twinnets wrote it).
RUN_FILES = ("results.json", "report.md", "job.json", "diagnose-job.json", "*.png", *SIDES,
             *(f"{side}-control" for side in SIDES), "rows", "seed-*", "profiles",
             "export.json", "pending", "*.savedmodel", "*.pt2", "*.onnx")  # and what --export writes
_held: dict[Path, object] = {}  # the folders this process owns, and their open lock files


def entries(folder: Path) -> set[str]:
    """The names at the folder's top level, less twinnets' bookkeeping."""
    return {path.name for path in folder.iterdir() if path.name not in BOOKKEEPING}


def owned_names(folder: Path) -> set[str]:
    """The names twinnets wrote in the folder: its list; for a run killed before it wrote the list, each name a run
    writes."""
    found = entries(folder)
    listed = set(json.loads((folder / OWNED).read_text())) if (folder / OWNED).is_file() else set()
    if (folder / "job.json").is_file() or not (folder / OWNED).is_file():
        listed |= {path.name for pattern in RUN_FILES for path in folder.glob(pattern)}
    return listed & found


def holds_run(folder: Path) -> bool:
    return any((folder / name).is_file() for name in RUN_MARKS)


@contextmanager
def owned_folder(out: Path) -> Iterator[Path]:
    """The run folder locked while this process (and the workers that inherit the lock, held_locks) owns it: a
    second run, resume or prediction on it is refused in one line naming the holder's process id. A SIGKILL leaves
    no stale lock: the kernel releases it with the last process. On the way out, what the run wrote is listed."""
    out = Path(out).resolve()
    if out in _held:  # already ours (a nested call): flock would refuse this process a second lock on it
        yield out
        return
    try:
        handle = open(out / LOCK, "a+")
    except OSError as error:
        raise UserError(f"{out}: cannot write in this folder ({error.strerror})") from None
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        handle.close()
        raise UserError(f"{out}: another twinnets run is using this folder (process {holder}); wait for it to end "
                        "or choose another --out") from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    _held[out] = handle
    users = entries(out) - owned_names(out)
    if (out / ASIDE).is_dir() and holds_run(out):  # a replacement killed after its new run had started
        discard(out / ASIDE)
    try:
        yield out
    except KeyboardInterrupt:
        if out == outermost(out):  # said once, of the folder to resume: a --seeds series', not its seed-N's
            print(f"\n{where_to_continue(out)}", file=sys.stderr, flush=True)
        raise
    finally:
        written = entries(out) - users
        if written or (out / OWNED).is_file():
            write_json(out / OWNED, sorted(written))
        del _held[out]
        handle.close()


def outermost(folder: Path) -> Path:
    """The outermost folder this process owns that holds `folder`: a --seeds series' top folder for its seed-N."""
    folder = Path(folder).resolve()
    return min((held for held in _held if folder.is_relative_to(held)), key=lambda held: len(held.parts),
               default=folder)


def command() -> str:
    """How the user started twinnets: the installed command, or python and the script."""
    name = Path(sys.argv[0]).name
    return name if name == "twinnets" else f"python {sys.argv[0] if name == 'compare.py' else 'compare.py'}"


def resume_command(folder: Path) -> str:
    return f"{command()} --resume {outermost(folder)}"


def where_to_continue(out: Path) -> str:
    """After an interruption, one line: how to continue the run, or that what it left cannot be continued."""
    if (out / "job.json").is_file():
        return f"interrupted: continue with {resume_command(out)}"
    if not entries(out):
        return f"interrupted before {out} held anything"
    return (f"interrupted: what twinnets wrote in {out} cannot be continued (only a training comparison, a --seeds "
            "series or a prediction can); it is safe to delete, or run again with --overwrite")


def held_locks() -> tuple[int, ...]:
    """The lock files of the folders this process owns, for its workers to inherit: flock belongs to the open file,
    so the folder stays locked until the last process holding it is gone."""
    return tuple(handle.fileno() for handle in _held.values())


def holder_of(folder: Path) -> str | None:
    """The process id that owns a run folder now, or None when no process does (checked without keeping it)."""
    lock = Path(folder) / LOCK
    if Path(folder).resolve() in _held or not lock.is_file():
        return None
    with open(lock) as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return handle.read().strip() or "unknown"
    return None


def set_aside(out: Path) -> Path:
    """Move what an earlier run wrote into out/.twinnets-replaced, whole or not at all: a name that cannot be moved
    puts the others back and is named in one line, with its full path."""
    aside = out / ASIDE
    discard(aside)  # a replacement killed before its new run started: that earlier run was given up already
    aside.mkdir()
    moved = []
    try:
        for name in sorted(owned_names(out)):
            os.rename(out / name, aside / name)
            moved.append(name)
    except OSError as error:
        for name in moved:
            os.rename(aside / name, out / name)
        aside.rmdir()
        raise UserError(f"{error.filename}: cannot move the earlier run's files aside to replace them "
                        f"({error.strerror}); nothing was removed") from None
    return aside


def put_back(out: Path, aside: Path) -> None:
    """The earlier run restored, for a new run that wrote nothing."""
    for path in aside.iterdir():
        os.rename(path, out / path.name)
    aside.rmdir()


def discard(aside: Path) -> None:
    """The earlier run's files deleted; one that cannot be is named, and the new run is not stopped for it."""
    try:
        shutil.rmtree(aside)
    except FileNotFoundError:
        pass
    except OSError as error:
        print(f"compare.py: warning: {error.filename}: cannot delete the replaced run's files ({error.strerror}); "
              f"delete {aside} yourself", file=sys.stderr)


@contextmanager
def output_folder(out: Path | None, task: str, overwrite: bool) -> Iterator[Path]:
    """--out, or runs/<task>-<timestamp>, created and owned (owned_folder) for the run; a folder holding files only
    with --overwrite, which moves an earlier run's files aside (and nothing else: a user's own files stay) and
    deletes them once the new run has written something. A run refused before it wrote anything leaves no folder
    behind, and an earlier run where it was."""
    out = out or Path.cwd() / "runs" / f"{task}-{datetime.now():%Y%m%d-%H%M%S}"
    if out.is_symlink() and not out.exists():
        raise UserError(f"{out}: --out is a symbolic link to {os.readlink(out)}, which does not exist")
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: --out is a file, not a folder")
    if out.is_dir() and entries(out) and not overwrite:
        raise UserError(f"{out}: the output folder is not empty; choose another --out or pass --overwrite")
    created = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(f"{out}: cannot create the output folder ({error.strerror})") from None
    try:
        with owned_folder(out):
            aside = set_aside(out) if holds_run(out) else None
            kept = entries(out)  # the user's own files
            try:
                yield out
            finally:
                if aside is not None:
                    discard(aside) if entries(out) - kept else put_back(out, aside)
    except BaseException:
        if created and out.is_dir() and not entries(out):
            shutil.rmtree(out, ignore_errors=True)  # refused before it wrote anything
        raise
