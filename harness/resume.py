"""--resume RUN_DIR: continue whatever the folder holds (a comparison, a prediction, a --seeds series) from what it
wrote before it was stopped, in the folder's own settings and from wherever the folder is now."""
from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from harness import comparison, seeds
from harness.jobs import RunJob, read_job
from harness.ownership import owned_folder, owned_names, resume_command
from harness.predict import run as predict
from shared.data.fingerprint import fingerprint
from shared.errors import UserError


def resume(out: Path, in_process: bool, data_dir: Path | None = None) -> dict:
    """Continue a run whose job.json is still there (it goes when the run completes), from each side's last
    checkpoint; a side that had finished is not run again. A prediction's folder resumes its prediction. data_dir:
    the run's data folder at its new place (--resume RUN --data-dir NEW)."""
    if not out.is_dir():
        raise UserError(f"{out}: nothing to resume (no such folder)")
    with owned_folder(out) as out:  # first: a run still writing the folder is named, whatever it wrote so far
        if not (out / "job.json").is_file():
            why = ("the run had finished" if (out / "results.json").is_file() else
                   "what twinnets wrote here, a benchmark or a --diagnose, cannot be continued: run it again"
                   if owned_names(out) else "not a twinnets run folder")
            raise UserError(f"{out}: nothing to resume ({why})")
        found = read_job(out / "job.json")
        if data_dir is not None and found.get("mode") in ("predict", "seeds"):
            raise UserError(f"--resume {out} --data-dir: a moved data folder is taken by a resumed training "
                            f"comparison, not by a {'prediction' if found['mode'] == 'predict' else '--seeds series'}")
        if found.get("mode") == "predict":
            return predict.resume(out, found)
        if found.get("mode") == "seeds":
            return seeds.resume(out, found)
        job = RunJob.read(out / "job.json")
        if data_dir is not None:
            job = moved_data(out, job, data_dir)
        check_data_there(out, job)
        print(f"resuming {job.task} in {out}", flush=True)
        return comparison.run_job(out, job, in_process)


def moved_data(out: Path, job: RunJob, data_dir: Path) -> RunJob:
    """The job reading its data from data_dir, accepted when that folder's fingerprint is the one the run recorded
    (the same files, of the same sizes); job.json says so from now on."""
    recorded = (job.data or {}).get("fingerprint")
    if recorded is None:
        raise UserError(f"--data-dir {data_dir}: this run recorded no fingerprint of its data (it used "
                        f"{'no data folder' if not job.data else 'a twinnets older than the fingerprint'}), so a moved "
                        "folder cannot be checked")
    if not data_dir.is_dir():
        raise UserError(f"{data_dir}: no such folder (--data-dir)")
    found = fingerprint(data_dir)
    if found != recorded:
        raise UserError(f"{data_dir}: not the data this run trained on: {found['files']} files, {found['bytes']:,} "
                        f"bytes, against the {recorded['files']} files, {recorded['bytes']:,} bytes recorded from "
                        f"{job.data['data_dir']}")
    description = {**job.data["description"], "location": str(data_dir)}
    job = replace(job, data={**job.data, "data_dir": str(data_dir), "description": description})
    job.write(out / "job.json")
    return job


def check_data_there(out: Path, job: RunJob) -> None:
    """The run's data folder still where it was: if it moved, one line says how to point the run at it."""
    data_dir = (job.data or {}).get("data_dir")
    if data_dir is not None and not Path(data_dir).is_dir():
        raise UserError(f"{data_dir}: the data folder of this run is gone; if it moved, continue with "
                        f"{resume_command(out)} --data-dir NEW_PLACE")


def check_resume_alone(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """--resume takes the run's own settings: a flag given beside it (but --in-process) would be ignored, so it is
    refused instead."""
    given = sorted(f"--{name.replace('_', '-')}" for name, value in vars(args).items()
                   if name not in ("resume", "in_process", "data_dir") and value != parser.get_default(name))
    if given:
        raise UserError(f"--resume continues a run with the settings it was started with: leave out {', '.join(given)}")
