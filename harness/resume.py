"""--resume RUN_DIR: continue whatever the folder holds (a comparison, a prediction, a --seeds series) from what it
wrote before it was stopped, in the folder's own settings and from wherever the folder is now."""
from __future__ import annotations

import argparse
from pathlib import Path

from harness import run, seeds
from harness.jobs import RunJob, owned_folder, read_job
from harness.predict import run as predict
from shared.errors import UserError


def resume(out: Path, in_process: bool) -> dict:
    """Continue a run whose job.json is still there (it goes when the run completes), from each side's last
    checkpoint; a side that had finished is not run again. A prediction's folder resumes its prediction."""
    if not out.is_dir():
        raise UserError(f"{out}: nothing to resume (no such folder)")
    with owned_folder(out) as out:  # first: a run still writing the folder is named, whatever it wrote so far
        if not (out / "job.json").is_file():
            why = "the run had finished" if (out / "results.json").is_file() else "not a twinnets run folder"
            raise UserError(f"{out}: nothing to resume ({why})")
        found = read_job(out / "job.json")
        if found.get("mode") == "predict":
            return predict.resume(out, found)
        if found.get("mode") == "seeds":
            return seeds.resume(out, found)
        job = RunJob.read(out / "job.json")
        print(f"resuming {job.task} in {out}", flush=True)
        return run.run_job(out, job, in_process)


def check_resume_alone(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """--resume takes the run's own settings: a flag given beside it (but --in-process) would be ignored, so it is
    refused instead."""
    given = sorted(f"--{name.replace('_', '-')}" for name, value in vars(args).items()
                   if name not in ("resume", "in_process") and value != parser.get_default(name))
    if given:
        raise UserError(f"--resume continues a run with the settings it was started with: leave out {', '.join(given)}")
