"""`compare.py --predict RUN_DIR`: predict with a trained run's canonical weights, no retraining, on both sides, each
in its own worker process (`python -m harness.worker`, a "predict" order): the U-Net masks every photo of the run's
test folder, of --data-dir or of --images into a streamed, resumable Kaggle submission per side, with overlays, and
the two sides' masks are compared pixel by pixel; mlp and cnn classify digit images. --weights FILE or
--weights-from SIDE serve one model on both frameworks. Settled first (checks.py), then each side (masks.py
writing through rows.py; digits.py), then the agreement (agreement.py) and the reports (report.py)."""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Callable

from harness.environment import environment, recorded_variables, side_variables
from harness.flags import check_device, frameworks
from harness.jobs import WorkerOrder, relative_to, spec_of, write_job
from harness.launch import launch_worker
from harness.ownership import holder_of, output_folder, resume_command
from harness.predict import checks
from harness.predict.agreement import mask_agreement
from harness.predict.digits import digits_agreement, predict_digits, prepare_digits, save_digits
from harness.predict.export import export_run
from harness.predict.exported import exported_files, exported_surface
from harness.predict.masks import predict_masks
from harness.predict.report import console_table, markdown_report
from harness.predict.rows import drop_progress
from harness.registry import task_of
from harness.report import SIDE_NAMES
from harness.surface import SIDES
from shared.atomic import write_atomic, write_json
from shared.errors import UserError
from shared.execution import default_execution
from shared.weights import load_weights_file

RUNTIMES = ("framework", "savedmodel", "pt2", "onnx")  # --runtime: the model, or one of --export's files
PHOTOS = "photos.txt"  # the photos of a U-Net prediction, one absolute path a line, in the order of the rows


@dataclass(frozen=True)
class Prediction:
    """What a task's prediction is: its input made once in the parent, a side's run, the agreement of two."""

    prepare: Callable  # (run, args) -> (description, write(out) -> None)
    side: Callable  # (surface, spec, job, side folder, model_of) -> the side's result entry
    agreement: Callable  # (out, sides, job) -> the agreement entry
    done: Callable[[Path], None] = lambda folder: None  # after the side's result.json: drop what resuming needed
    written: str = ""  # what each side writes, for the closing line
    inputs: str = "images"  # what it predicts on, for the report


def prepare_photos(run: checks.TrainedRun, args) -> tuple[dict, Callable[[Path], None]]:
    """The photos, listed (not read) before anything is written: --images, --data-dir's test set or the run's."""
    if args.images is not None:
        photos, source = checks.list_images(args.images), {"source": "--images",
                                                          "location": [str(p) for p in args.images]}
    elif args.data_dir is not None:  # your own folder of images (written as PNG masks too), or Carvana's test set
        photos, source = checks.data_dir_photos(args.data_dir)
    else:
        photos = checks.run_test_photos(run)
        source = {"source": run.data.get("source", "carvana"), "location": str(photos[0].parent) if photos else None}
    if not photos:
        raise UserError(f"{source['location']}: no photos to predict")
    lines = [str(p.resolve()) for p in photos]
    bad = next((line for line in lines if "\n" in line or "\r" in line), None)
    if bad is not None:
        raise UserError(f"{bad!r}: a photo's name must not hold a line break")
    description = {**source, "count": len(lines), "skipped": []}
    return description, lambda out: write_atomic(out / PHOTOS, "\n".join(lines) + "\n")


def prepare_digit_images(run: checks.TrainedRun, args) -> tuple[dict, Callable[[Path], None]]:
    found = prepare_digits(run, args)
    return found["description"], lambda out: save_digits(out, found)


def masks_agree(out: Path, sides: list[str], job: dict) -> dict:
    return mask_agreement(out, sides, out / PHOTOS)


def classes_agree(out: Path, sides: list[str], job: dict) -> dict:
    return digits_agreement(out, sides, job["task"])


# The two kinds of prediction; harness/registry.py says which one each trained task makes (Task.prediction).
PREDICTIONS = {
    "masks": Prediction(prepare_photos, predict_masks, masks_agree, drop_progress, "<side>/submit.csv.gz", "photos"),
    "classes": Prediction(prepare_digit_images, predict_digits, classes_agree, written="<side>/predictions.csv"),
}


def main(args) -> int:
    """Check everything, then write the output folder and run the sides; a UserError leaves nothing half-done."""
    if getattr(args, "export", None) is not None:
        return export_run(args)
    checks.check_flags(args)
    check_device(args.device)
    if args.runtime != "framework" and args.device == "cuda":
        raise UserError(f"--runtime {args.runtime} runs the exported file on the CPU (as --export verified it): leave "
                        "out --device cuda")
    holder = holder_of(args.predict) if args.predict.is_dir() else None
    if holder is not None:  # first: a run still training has no final weights yet, and that is not what is wrong
        raise UserError(f"{args.predict}: a twinnets run is still writing this folder (process {holder}); predict "
                        "once it has ended")
    run = checks.read_run(args.predict.expanduser().resolve(), args.task)
    # --frameworks all: every side the run trained
    sides = frameworks(args.frameworks, tuple(run.sides) if args.frameworks.strip() == "all" else SIDES)
    spec = checks.prediction_spec(run, args)
    weights = checks.weight_files(run, sides, args)
    checks.check_weights(weights, spec)
    if args.data_dir is not None:
        args.data_dir = args.data_dir.expanduser().resolve()
    exported = None if args.runtime == "framework" else exported_files(run.folder, args.runtime, sides,
                                                                        task_of(spec).prediction, spec.image_size,
                                                                        weights)
    description, write_input = PREDICTIONS[task_of(spec).prediction].prepare(run, args)
    out = args.out or Path.cwd() / "runs" / f"{spec.name}-predict-{datetime.now():%Y%m%d-%H%M%S}"
    if out.expanduser().resolve() == run.folder:
        raise UserError(f"{out}: --out is the run folder itself; predict into another folder")
    unfinished = out / "job.json"
    if unfinished.is_file() and not args.overwrite and json.loads(unfinished.read_text()).get("mode") == "predict":
        raise UserError(f"{out}: holds a prediction that did not finish; continue it with {resume_command(out)}, "
                        "or pass --overwrite to start again")
    with output_folder(out, spec.name, args.overwrite) as out:
        write_input(out)
        job = {"mode": "predict", "task": spec.name, "spec": spec.to_dict(), "run": str(run.folder),
               "checkpoint": args.checkpoint,
               "weights": {s: {**w, "file": str(Path(w["file"]).expanduser().resolve())} for s, w in weights.items()},
               "sides": sides, "threads": args.threads, "out": str(out), "photos": str(out / PHOTOS),
               "source": description, "preview": args.preview, "skip_bad": args.skip_bad, "device": args.device,
               "in_process": args.in_process, "exported": exported}
        run_job(out, job)
    return 0


def resume(out: Path, job: dict) -> dict:
    """`compare.py --resume OUT_DIR` of a prediction: each side continues after its last complete row."""
    print(f"resuming the {job['task']} prediction in {out}", flush=True)
    return run_job(Path(out), job)


def run_job(out: Path, job: dict) -> dict:
    """Each side without a result, in its own process (torch first in this one with --in-process), then the
    agreement and the reports; job.json goes last (its presence means: resumable)."""
    job_path = write_job(out / "job.json", job)
    started = time.perf_counter()
    order = sorted(job["sides"], key=lambda s: s != "torch") if job["in_process"] else job["sides"]
    for side in order:  # interrupted, the folder's owner says how to continue (harness/ownership.py)
        if (out / side / "result.json").is_file():
            print(f"== {SIDE_NAMES[side]}: finished before ==", flush=True)
            continue
        print(f"== {SIDE_NAMES[side]} predicts with {describe_weights(job, side)} ==", flush=True)
        if job["in_process"]:
            predict_side(side, job)
        else:
            launch_worker(WorkerOrder("predict", side, str(job_path)), threads=job["threads"])
    frameworks = {side: json.loads((out / side / "result.json").read_text()) for side in job["sides"]}
    spec = spec_of(job)
    prediction = PREDICTIONS[task_of(spec).prediction]
    results = {
        "task": job["task"], "mode": "predict", "run": job["run"],
        "checkpoint": "final" if job["checkpoint"] is None else job["checkpoint"], "weights": job["weights"],
        "data": job["source"],
        "config": {**spec.to_dict(), "frameworks": job["sides"], "threads": job["threads"], "device": job["device"],
                   "preview": job["preview"], "skip_bad": job["skip_bad"]},
        "environment": {**environment(job["threads"], job["in_process"]), **recorded_variables(frameworks)},
        "frameworks": frameworks,
    }
    if len(job["sides"]) == 2:
        print("== agreement of the two sides ==", flush=True)
        results["agreement"] = {**prediction.agreement(out, job["sides"], job),
                                "weights": same_or_own(job)}
    results["wall_s"] = time.perf_counter() - started
    write_json(out / "results.json", results)
    write_atomic(out / "report.md", markdown_report(results, out, prediction.inputs))
    (out / "job.json").unlink()
    print()
    print(console_table(results, prediction.inputs))
    pngs = any("masks" in found.get("artifacts", {}) for found in frameworks.values())  # your own folder's masks
    print(f"\nwrote {out}/results.json, {out}/report.md, {prediction.written}"
          + (", <side>/masks/<stem>.png" if pngs else ""))
    return results


def describe_weights(job: dict, side: str) -> str:
    found = job["weights"][side]
    owner = found["trained_by"]
    who = "the --weights file" if owner == "--weights" else f"{SIDE_NAMES[owner]}'s trained weights"
    return f"{who} ({found['file']})"


def same_or_own(job: dict) -> str:
    """"same": both sides ran the same weights (any difference is the frameworks'); "own": each its own training."""
    return "same" if len({w["sha256"] for w in job["weights"].values()}) == 1 else "own"


def predict_side(side: str, job: dict) -> None:
    """One side's prediction in this (fresh) process: <out>/<side>/result.json and the side's files."""
    spec = spec_of(job)
    task = task_of(spec)
    surface = task.surface(side, spec)
    surface.runtime.configure(job["threads"], spec.seed)
    execution = surface.runtime.configure_execution(default_execution(side, device=job["device"]))
    weights_file = job["weights"][side]["file"]
    if job.get("exported"):  # --runtime: the model is an exported file of --export, which build loads
        surface = exported_surface(surface, job["exported"][side], job["threads"])

    def model_of():
        model = surface.task.build(spec)
        if job.get("exported"):  # the file holds its weights
            return model
        surface.task.load_weights(model, load_weights_file(weights_file))
        if execution.device != "cpu":  # the surface has no call of its own for it: a train step moves the model
            surface.task.make_train_step(model, surface.task.make_optimizer(model, spec), spec, execution)
        return model

    out_dir = Path(job["out"]) / side
    result = PREDICTIONS[task_of(spec).prediction].side(surface, spec, job, out_dir, model_of)
    result.update(weights=job["weights"][side], execution=execution.to_dict(), threads=surface.runtime.threads(),
                  versions=surface.runtime.versions(), **side_variables(),
                  artifacts=relative_to(result["artifacts"], Path(job["out"])),
                  served_by=(job.get("exported") or {}).get(side, {"runtime": "framework"}))
    write_json(out_dir / "result.json", result)
    PREDICTIONS[task_of(spec).prediction].done(out_dir)
    timing = result["timing"]
    rate = timing.get("photos_per_s")
    served = result["served_by"]
    print(f"{SIDE_NAMES[side]}: {result['rows']:,} predicted"
          + (f" by {served['runtime']} running {Path(served['file']).name}" if "file" in served else "")
          + (f", {len(result['skipped'])} skipped" if result["skipped"] else "")
          + (f", {rate:.1f} photos/s" if rate else ""), flush=True)


def add_flags(parser: argparse.ArgumentParser) -> None:
    """compare.py's flags of a prediction (--predict RUN_DIR)."""
    predict = parser.add_argument_group("prediction (--predict RUN_DIR)").add_argument
    predict("--predict", type=Path, metavar="RUN_DIR", help="predict with the trained weights of an earlier run")
    predict("--checkpoint", type=int, metavar="N", help="the weights after epoch N instead of the final model")
    predict("--weights", type=Path, metavar="FILE", help="one canonical .safetensors file for both sides")
    predict("--weights-from", choices=SIDES, help="one side's trained weights of RUN_DIR, for both sides")
    predict("--images", type=Path, nargs="+", metavar="PATH", help="photos or folders of photos to predict")
    predict("--preview", type=int, default=8, metavar="N", help="overlays written for the first N photos")
    predict("--skip-bad", action="store_true", help="skip (and list) photos that cannot be read")
    predict("--runtime", choices=RUNTIMES, default="framework",
            help="predict with the framework's model (default) or with a file --export kept in RUN_DIR/exported/ "
                 "(savedmodel: --frameworks tf, pt2: --frameworks torch; onnx: both)")
    predict("--export", type=Path, metavar="RUN_DIR", action=ExportRun,
            help="write each side's trained weights as its deployable format (SavedModel; .pt2) and ONNX, each "
                 "verified first on the run's validation batch (docs/inference.md); --data-dir: the run's data "
                 "moved there")


class ExportRun(argparse.Action):
    """--export RUN_DIR reads a run folder as --predict does: it sets both, so compare.py's parse_args takes the
    run's settings from the folder (harness/predict/export.py then runs instead of a prediction)."""

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, "export", values)
        setattr(namespace, "predict", values)
