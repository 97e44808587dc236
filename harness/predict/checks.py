"""What `compare.py --predict RUN_DIR` predicts with and on, settled in the parent before any side starts: the run's
settings, each side's canonical weights (checked against the model), the photos or digits, and the flags that do
not apply. Every problem is one UserError line naming the file (harness/predict/run.py runs the prediction)."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from harness.registry import task_of
from harness.report import SIDE_NAMES
from harness.surface import SIDES
from shared.data import folders, synthetic_cars
from shared.data.carvana import layout as carvana_layout
from shared.errors import DataError, UserError
from shared.tasks import TASKS, TaskSpec, make_spec
from shared.weights import Param, load_weights_file, mismatch_message

PHOTO_SUFFIXES = folders.SUFFIXES  # PNG, JPEG, TIFF, GIF, BMP
# Flags of a training run that do not apply to a prediction: its settings are the run's own.
NOT_FOR_PREDICTION = ("epochs", "lr", "seed", "sample_size", "validation_size", "base_filters", "optimizer", "variant",
                      "seeds", "diagnose", "resume", "mask_threshold", "split_by")
DEFAULTS_ONLY = {"benchmark": False, "download": False, "nproc": 1, "precision": "fp32"}


@dataclass(frozen=True)
class TrainedRun:
    """An earlier run folder: its task, the spec it trained with, and where its data came from."""

    folder: Path
    spec: TaskSpec
    sides: list[str]  # the sides it trained
    data: dict  # results.json "data": source, location, ...


def check_flags(args) -> None:
    """Refuse the flags that would change what the run trained, or that mean another command."""
    for flag in NOT_FOR_PREDICTION:
        if getattr(args, flag, None) is not None:
            raise UserError(f"--{flag.replace('_', '-')} does not apply to --predict: the model is the run's own "
                            "(its settings come from RUN_DIR/results.json)")
    for flag, default in DEFAULTS_ONLY.items():
        if getattr(args, flag, default) != default:
            raise UserError(f"--{flag} does not apply to --predict")
    if args.weights is not None and (args.weights_from is not None or args.checkpoint is not None):
        raise UserError("--weights names the one weights file both sides use: leave out --weights-from and "
                        "--checkpoint")
    if args.images is not None and args.data_dir is not None:
        raise UserError("--images and --data-dir exclude each other: give the photos one way")
    for flag in ("preview", "batch_size", "workers", "threads", "checkpoint"):
        value = getattr(args, flag, None)
        least = 0 if flag in ("preview", "workers") else 1
        if value is not None and value < least:
            raise UserError(f"--{flag.replace('_', '-')} must be {'0 or more' if least == 0 else 'positive'}, "
                            f"got {value}")


def read_run(folder: Path, task: str | None) -> TrainedRun:
    """The run's task and spec from its results.json (or, for a run still in progress or killed, its job.json)."""
    if not folder.is_dir():
        raise DataError(folder, "no such run folder (--predict RUN_DIR names the --out of a training run)")
    results, job = folder / "results.json", folder / "job.json"
    if results.is_file():
        found = _read_json(results)
        config, data = found.get("config", {}), found.get("data", {})
        sides = list(found.get("frameworks", {})) or config.get("frameworks", list(SIDES))
    elif job.is_file():
        found = _read_json(job)
        config, data = found.get("spec", {}), (found.get("data") or {}).get("description", {})
        sides = found.get("sides", list(SIDES))
    else:
        raise DataError(folder, "not a twinnets run folder (no results.json)")
    if found.get("mode") == "predict":
        raise DataError(folder, "is the output of a prediction, not a training run")
    name = found.get("task")
    if name not in TASKS or not task_of(make_spec(name)).trains:
        raise DataError(results if results.is_file() else job, f"task {name!r} trains no model to predict with")
    if task is not None and task != name:
        raise UserError(f"--task {task}: {folder} is a {name} run")
    fields = {field.name for field in dataclasses.fields(TASKS[name])}
    settings = {k: tuple(v) if isinstance(v, list) else v for k, v in config.items() if k in fields}
    return TrainedRun(folder, make_spec(name, **settings), [s for s in sides if s in SIDES], data)


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise DataError(path, f"cannot read it as JSON ({' '.join(str(error).split())})") from None


def prediction_spec(run: TrainedRun, args) -> TaskSpec:
    """The run's spec, with the input side of --full-size or --image-size (a fully convolutional net predicts at any
    valid size with the same weights) and the prediction's --batch-size and --workers."""
    spec, changes = run.spec, {}
    if args.full_size:
        if spec.full_size is None:
            raise UserError(f"--full-size does not apply to task {spec.name!r}: it sizes the U-Net")
        changes["image_size"] = spec.full_size[spec.variant]["image_size"]
    if args.image_size is not None:
        if spec.full_size is None:
            raise UserError(f"--image-size does not apply to a {spec.name} prediction: its input is fixed")
        changes["image_size"] = args.image_size
    if args.batch_size is not None:
        changes["batch_size"] = args.batch_size
    if args.workers is not None:
        changes["workers"] = args.workers
    return make_spec(spec.name, **{**spec.to_dict(), **changes})


def weight_files(run: TrainedRun, sides: list[str], args) -> dict[str, dict]:
    """Each side's weights file and who trained it: --weights (both sides), --weights-from SIDE (its file for both),
    or each side's own; the final model, or --checkpoint N."""
    if args.weights is not None:
        return {side: {"file": str(args.weights), "trained_by": "--weights"} for side in sides}
    owners = {side: args.weights_from or side for side in sides}
    files = {}
    for side, owner in owners.items():
        if owner not in run.sides:
            trained = ", ".join(SIDE_NAMES[s] for s in run.sides) or "no side"
            raise DataError(run.folder, f"the run trained {trained}, not {SIDE_NAMES[owner]}: pass --weights-from "
                                        f"{(run.sides or ['tf'])[0]} or --frameworks {','.join(run.sides)}")
        files[side] = {"file": str(trained_weights(run, owner, args.checkpoint)), "trained_by": owner}
    return files


def trained_weights(run: TrainedRun, side: str, epoch: int | None) -> Path:
    """RUN_DIR/<side>/model.safetensors (or the digits' checkpoint.safetensors), or the checkpoint of an epoch."""
    folder = run.folder / side
    if epoch is None:
        path = folder / task_of(run.spec).final_weights
        if not path.is_file():
            raise DataError(path, f"no trained weights of {SIDE_NAMES[side]} in this run folder (did its training "
                                  "save a model? a run killed in its first epoch has none)")
        return path
    path = folder / "checkpoint" / f"epoch-{epoch}" / "model.safetensors"
    if not path.is_file():
        kept = sorted(int(p.name.split("-", 1)[1]) for p in (folder / "checkpoint").glob("epoch-*")
                      if p.name.split("-", 1)[1].isdigit() and (p / "model.safetensors").is_file())
        there = f"epoch {', '.join(map(str, kept))} is there" if kept else "none is left"
        raise DataError(path, f"no checkpoint of epoch {epoch}: training keeps only its last epoch's ({there}); "
                              "leave out --checkpoint for the final model")
    return path


def check_weights(files: dict[str, dict], spec: TaskSpec) -> None:
    """Each distinct file read whole (a corrupt or truncated one fails here) and checked against the model's
    canonical layout, naming the first tensor that is missing or has another shape; each entry gets the file's
    sha256 (two sides whose files hash alike run the same model)."""
    layout = task_of(spec).layout(spec)
    digests = {}
    for path in sorted({found["file"] for found in files.values()}):
        check_layout(Path(path), load_weights_file(path), layout, spec)
        digests[path] = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    for found in files.values():
        found["sha256"] = digests[found["file"]]


def check_layout(path: Path, weights: dict, layout: dict[str, Param], spec: TaskSpec) -> None:
    problem = mismatch_message(weights, layout, _describe_model(spec))
    if problem:
        raise DataError(path, problem)


def _describe_model(spec: TaskSpec) -> str:
    """The run's model, with the fields that shape its weights where it has them (the U-Net's variant and width)."""
    if hasattr(spec, "variant"):
        return f"U-Net of the run ({spec.variant}, --base-filters {spec.base_filters}, depth {spec.depth})"
    return f"{spec.name} of the run"


# ---- the photos -------------------------------------------------------------------------------------------------

def list_images(paths: list[Path]) -> list[Path]:
    """--images: files as given, folders as the JPEG/PNG files directly inside them, sorted by name."""
    found: list[Path] = []
    for path in paths:
        path = path.expanduser()
        if path.is_dir():
            with os.scandir(path) as entries:
                inside = sorted(Path(e.path) for e in entries if e.is_file() and not e.name.startswith(".")
                                and e.name.lower().endswith(PHOTO_SUFFIXES))
            if not inside:
                raise DataError(path, "no PNG, JPEG, TIFF, GIF or BMP photos in this folder (--images)")
            found += inside
        elif path.is_file():
            found.append(path)
        else:
            raise DataError(path, "no such file or folder (--images)")
    return found


def data_dir_photos(data_dir: Path) -> tuple[list[Path], dict]:
    """--data-dir's photos and where they came from: your own folder's images/ (or imgs/, or the images directly in
    the folder; any masks/ beside them are not read), else the test photos of a Kaggle-layout folder."""
    images = folders.prediction_images(data_dir) if data_dir.is_dir() else None
    if images is not None:
        return images, {"source": folders.SOURCE_NAME, "location": str(data_dir)}
    return test_photos(data_dir), {"source": "carvana", "location": str(data_dir)}


def test_photos(data_dir: Path) -> list[Path]:
    """The test photos of a Kaggle-layout folder or its zips (test/ or test.zip; test_hq likewise); unlike training,
    a prediction needs no train/ folder beside them."""
    root = data_dir.expanduser()
    if not root.is_dir():
        raise DataError(root, "no such folder (--data-dir)")
    bases = carvana_layout._extract_bases(root)
    search = [root]
    test_dir = carvana_layout._component_dir(search, ("test", "test_hq"), ".jpg", bases)
    if test_dir is None:  # Kaggle's all-in-one download holds the other zips (no other zip is opened)
        search += [carvana_layout._extract(outer, bases) for outer in carvana_layout.all_in_one_zips(root)]
        test_dir = carvana_layout._component_dir(search, ("test", "test_hq"), ".jpg", bases)
    if test_dir is None:
        raise DataError(root, "no test photos; expected test/*.jpg or test.zip (or pass --images)")
    return carvana_layout._photos(test_dir)


def run_test_photos(run: TrainedRun) -> list[Path]:
    """The test folder of the run's dataset (a folder set's own images, having no test folder); the embedded synthetic
    set is generated again if its cache is gone."""
    location = run.data.get("location")
    if location and Path(location).is_dir() and run.data.get("source") == folders.SOURCE_NAME:
        return folders.prediction_images(Path(location)) or []
    if location and Path(location).is_dir():
        return test_photos(Path(location))
    if run.data.get("source") == synthetic_cars.SOURCE_NAME:
        spec = run.spec
        return test_photos(synthetic_cars.synthetic_carvana(n_cars=spec.synthetic_cars,
                                                            n_test_cars=spec.synthetic_test_cars, seed=spec.seed))
    raise DataError(Path(location or run.folder), "the run's dataset is not there any more: pass --data-dir or "
                                                  "--images")
