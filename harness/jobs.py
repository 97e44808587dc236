"""Typed jobs: a run of a side or of its control (Run), a comparison's job file (RunJob), a mode's job file with its
run-folder paths relative to the folder, and what one worker process does (WorkerOrder; harness/launch.py starts it
as `python -m harness.worker ORDER`, never with compare.py's parser)."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from harness.report import SIDE_NAMES
from shared.atomic import write_json
from shared.tasks import TaskSpec, make_spec

CONTROL_TITLES = {"ulp": "initial weights moved by 1 ulp", "threads": "1 thread", "none": ""}
KINDS = ("train", "agree", "bench", "diagnose", "predict", "infer", "pair")  # what a worker can be ordered to do


# The paths a mode's job file holds that lie inside its run folder: written relative to the file's folder, so a run
# folder can be moved, copied or archived and still resumed.
FOLDER_PATHS = ("out", "photos")


def relative_to(value, folder: Path):
    """A path (or a list of paths, or a dict of them) inside `folder` as a path relative to it; anything else as is."""
    if isinstance(value, dict):
        return {key: relative_to(found, folder) for key, found in value.items()}
    if isinstance(value, list):
        return [relative_to(found, folder) for found in value]
    if isinstance(value, (str, Path)) and Path(value).is_absolute() and Path(value).resolve().is_relative_to(folder):
        return Path(value).resolve().relative_to(folder).as_posix() or "."
    return value


def write_job(path: Path, job: dict) -> Path:
    """A mode's job file, its run-folder paths relative to the file's folder."""
    folder = Path(path).parent.resolve()
    return write_json(path, {**job, **{key: relative_to(job[key], folder) for key in FOLDER_PATHS if key in job}})


def read_job(path: Path) -> dict:
    """A mode's job file, its run-folder paths made absolute again from wherever the folder is now."""
    job = json.loads(Path(path).read_text())
    folder = Path(path).parent.resolve()
    return {**job, **{key: str(folder / job[key]) for key in FOLDER_PATHS if isinstance(job.get(key), str)}}


def spec_of(job: dict) -> TaskSpec:
    """The TaskSpec a mode's job file holds (JSON turns its tuples into lists)."""
    return make_spec(job["task"], **{k: tuple(v) if isinstance(v, list) else v for k, v in job["spec"].items()})


@dataclass(frozen=True)
class Run:
    """One training run of a side: the side itself, or its control (the same run from initial weights moved by one
    ulp, or with one thread), which measures the side's own rounding noise."""

    side: str
    control: bool = False

    @property
    def folder(self) -> str:
        """Its folder in the run folder: "tf", "tf-control"."""
        return f"{self.side}-control" if self.control else self.side

    def title(self, control: str) -> str:
        side = SIDE_NAMES[self.side]
        return f"{side} control ({CONTROL_TITLES[control]})" if self.control else side


@dataclass(frozen=True)
class RunJob:
    """A comparison's job file (job.json): everything a worker needs to train its side, and what --resume reads.
    Its presence in a run folder means the run has not finished."""

    task: str
    spec: dict  # the TaskSpec's fields
    threads: int  # intra-op threads of each side's process(es)
    out: str  # the run folder
    data: dict | None  # what prepare_data found, as plain JSON; None: the task needs no data
    sides: list[str]
    execution: dict = field(default_factory=lambda: {"precision": "fp32", "device": "cpu"})
    nproc: int = 1  # data-parallel processes per side
    control: str = "none"  # "ulp", "threads" or "none"
    agreement: bool = False  # both sides predict with the reference side's trained weights, compared pixel by pixel

    @property
    def task_spec(self) -> TaskSpec:
        return spec_of(asdict(self))

    @property
    def runs(self) -> list[Run]:
        """The sides, then each side's control run unless control is "none"."""
        controls = [] if self.control == "none" else [Run(side, control=True) for side in self.sides]
        return [Run(side) for side in self.sides] + controls

    def groups(self) -> list[list[Run]]:
        """The runs each worker process runs, in order: a side and its 1-ulp control share one (TensorFlow is
        imported, the photos decoded and the graphs built once); a 1-thread control needs its own, since TensorFlow
        fixes its thread pools when it starts. The reference side (TensorFlow, else the first named) goes first: the
        other sides' agreement masks need its trained weights."""
        sides = sorted(self.sides, key=lambda side: side != "tf")
        if self.control == "ulp":
            return [[Run(side), Run(side, control=True)] for side in sides]
        controls = [[Run(side, control=True)] for side in sides] if self.control != "none" else []
        return [[Run(side)] for side in sides] + controls

    def write(self, path: Path) -> Path:
        return write_job(path, asdict(self))

    @classmethod
    def read(cls, path: Path) -> RunJob:
        found = read_job(path)
        known = {f.name for f in fields(cls)}
        return cls(**{key: value for key, value in found.items() if key in known})


@dataclass(frozen=True)
class WorkerOrder:
    """What one worker process does: `kind` of work (train, agree, bench, diagnose, predict) for `side`, reading the
    mode's job file; a train order names its runs (the side, and its control when they share the process)."""

    kind: str
    side: str
    job: str  # path of the mode's job file
    runs: tuple[Run, ...] = ()

    def to_argument(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_argument(cls, text: str) -> WorkerOrder:
        found = json.loads(text)
        order = cls(found["kind"], found["side"], found["job"], tuple(Run(**run) for run in found.get("runs", ())))
        if order.kind not in KINDS or order.side not in SIDE_NAMES or any(r.side != order.side for r in order.runs):
            raise ValueError(f"not a worker order: {text}")
        return order


