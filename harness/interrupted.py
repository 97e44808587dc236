"""The partial report after Ctrl-C: what each side finished (its result, or the epochs its last checkpoint holds),
and the command that continues the run. job.json stays, so --resume can pick the run up; the run folder's owner
(harness/ownership.py) says on the console where to continue."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from harness.ownership import resume_command
from harness.report import SIDE_NAMES
from shared.atomic import write_atomic, write_json


def side_status(out: Path, side: str) -> dict:
    """A finished side's result, or how far its checkpoints got and the history they hold."""
    if (out / side / "result.json").is_file():
        return {"status": "finished", **json.loads((out / side / "result.json").read_text())}
    latest = out / side / "checkpoint" / "latest.json"
    saved = json.loads(latest.read_text()) if latest.is_file() else None
    log = json.loads((out / side / "checkpoint" / saved["folder"] / "log.json").read_text()) if saved else {}
    return {"status": f"interrupted after epoch {saved['epoch'] if saved else 0}", "history": log.get("history", [])}


def write_partial_report(out: Path, job: dict) -> None:
    frameworks = {side: side_status(out, side) for side in job["sides"]}
    hint = resume_command(out)
    write_json(out / "results.json", {"task": job["task"], "status": "interrupted", "resume": hint,
                                      "config": job["spec"], "frameworks": frameworks})
    lines = [f"# twinnets: {job['task']} (interrupted)", "", f"Continue with `{hint}`.", ""]
    lines += [f"- {SIDE_NAMES[side]}: {result['status']}" for side, result in frameworks.items()]
    write_atomic(out / "report.md", "\n".join(lines) + "\n")
    print(f"\ninterrupted: wrote {out}/results.json and report.md", file=sys.stderr)
