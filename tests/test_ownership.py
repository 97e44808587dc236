"""--overwrite loses nothing it should keep: an earlier run is moved aside whole (or not at all, the file that cannot
be moved named with its full path), deleted only once the new run has written something, and only what twinnets
wrote goes: a user's own files in the run folder stay."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from harness import comparison
from harness.jobs import RunJob
from harness.ownership import ASIDE, LOCK, OWNED, command, output_folder
from harness.resume import resume
from shared.errors import UserError
from shared.tasks import make_spec


def write_run(out: Path, overwrite: bool = False, marker: str = "first") -> None:
    """What a finished run writes: its results, report, a plot and a side folder."""
    with output_folder(out, "mlp", overwrite) as folder:
        (folder / "tf" / "tensorboard").mkdir(parents=True)
        (folder / "tf" / "tensorboard" / "events").write_text(marker)
        (folder / "loss.png").write_text(marker)
        (folder / "report.md").write_text(marker)
        (folder / "results.json").write_text(json.dumps({"run": marker}))


def listing(folder: Path) -> dict[str, str]:
    """Every file under the folder with its text, bookkeeping left out."""
    return {path.relative_to(folder).as_posix(): path.read_text() for path in sorted(folder.rglob("*"))
            if path.is_file() and path.name not in (LOCK, OWNED)}


@pytest.fixture
def finished(tmp_path) -> Path:
    """A finished run, then the user's own figure and notes saved into its folder."""
    out = tmp_path / "run"
    write_run(out)
    assert sorted(json.loads((out / OWNED).read_text())) == ["loss.png", "report.md", "results.json", "tf"]
    (out / "my_figure.png").write_text("mine")
    (out / "notes").mkdir()
    (out / "notes" / "todo.txt").write_text("mine too")
    return out


def test_overwrite_replaces_the_run_and_keeps_the_users_files(finished):
    write_run(finished, overwrite=True, marker="second")
    assert listing(finished) == {"loss.png": "second", "my_figure.png": "mine", "notes/todo.txt": "mine too",
                                 "report.md": "second", "results.json": '{"run": "second"}',
                                 "tf/tensorboard/events": "second"}
    assert not (finished / ASIDE).exists()


def test_a_file_that_cannot_be_moved_is_named_with_its_full_path_and_nothing_is_lost(finished, monkeypatch):
    before = listing(finished)
    rename = os.rename

    def refuse_tf(source, target):
        if Path(source).name == "tf":
            raise PermissionError(13, "Permission denied", str(source))
        rename(source, target)

    monkeypatch.setattr(os, "rename", refuse_tf)
    with pytest.raises(UserError) as refused:
        write_run(finished, overwrite=True, marker="second")
    message = str(refused.value)
    assert message.startswith(f"{finished / 'tf'}: cannot move") and "Permission denied" in message
    assert listing(finished) == before
    assert not (finished / ASIDE).exists()


def test_a_new_run_that_writes_nothing_leaves_the_earlier_run_in_place(finished):
    before = listing(finished)
    with pytest.raises(UserError):
        with output_folder(finished, "mlp", overwrite=True):
            raise UserError("refused by a worker before it wrote anything")
    assert listing(finished) == before and not (finished / ASIDE).exists()


def test_a_replaced_run_that_cannot_be_deleted_is_named_and_the_new_run_stands(finished, monkeypatch, capsys):
    import shutil

    def undeletable(path, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(Path(path) / "tf" / "tensorboard"))

    monkeypatch.setattr(shutil, "rmtree", undeletable)
    write_run(finished, overwrite=True, marker="second")
    warning = capsys.readouterr().err.strip()
    assert warning.startswith(f"compare.py: warning: {finished / ASIDE / 'tf' / 'tensorboard'}: cannot delete")
    assert f"delete {finished / ASIDE} yourself" in warning
    assert json.loads((finished / "results.json").read_text()) == {"run": "second"}


def test_a_killed_runs_files_are_recognised_by_name(tmp_path):
    """A run SIGKILLed before it listed what it wrote: its files are known by the names a run writes."""
    out = tmp_path / "killed"
    (out / "torch" / "checkpoint").mkdir(parents=True)
    (out / "job.json").write_text("{}")
    (out / "my_notes.txt").write_text("mine")
    write_run(out, overwrite=True, marker="second")
    assert not (out / "torch").exists() and not (out / "job.json").exists()
    assert (out / "my_notes.txt").read_text() == "mine" and (out / "report.md").read_text() == "second"


def test_a_dangling_symlink_out_names_what_it_points_to(tmp_path):
    link = tmp_path / "out"
    link.symlink_to(tmp_path / "gone" / "away")
    with pytest.raises(UserError, match=f"^{link}: --out is a symbolic link to {tmp_path / 'gone' / 'away'}, "
                                        "which does not exist$"):
        write_run(link)


# ---- interrupted anywhere, said so -------------------------------------------------------------------------

def test_an_interrupted_seeds_series_names_its_top_folder_once(tmp_path, capsys):
    """Ctrl-C during seed 1 of a --seeds series: one line, naming the series' folder (resuming seed-1 alone would
    finish that seed and never write the summary)."""
    top = tmp_path / "series"
    with pytest.raises(KeyboardInterrupt):
        with output_folder(top, "mlp", overwrite=False) as out:
            (out / "job.json").write_text("{}")
            with output_folder(out / "seed-1", "mlp", overwrite=True) as seed:
                (seed / "job.json").write_text("{}")
                raise KeyboardInterrupt
    said = [line for line in capsys.readouterr().err.splitlines() if line]
    assert said == [f"interrupted: continue with {command()} --resume {top}"]


def test_an_interrupted_benchmark_is_named_safe_to_delete_and_resume_says_why(tmp_path, capsys):
    out = tmp_path / "bench"
    with pytest.raises(KeyboardInterrupt):
        with output_folder(out, "mlp", overwrite=False):
            (out / "rows").mkdir()
            raise KeyboardInterrupt
    said = capsys.readouterr().err.strip()
    assert said.startswith(f"interrupted: what twinnets wrote in {out} cannot be continued")
    assert "safe to delete" in said
    with pytest.raises(UserError, match="a benchmark or a --diagnose, cannot be continued: run it again"):
        resume(out, in_process=False)


def test_ctrl_c_after_both_sides_finished_leaves_the_partial_report_and_a_resumable_folder(tmp_path, monkeypatch,
                                                                                          capsys):
    """Interrupted while parity and the reports are made: results.json says "interrupted", job.json stays."""
    def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(comparison, "run_sides", lambda *args: None)
    monkeypatch.setattr(comparison, "compare_sides", interrupted)
    spec = make_spec("neuron")
    with pytest.raises(KeyboardInterrupt):
        with output_folder(tmp_path / "run", "neuron", overwrite=False) as out:
            comparison.run_job(out, RunJob(task="neuron", spec=spec.to_dict(), threads=1, out=str(out), data=None,
                                    sides=["tf", "torch"]), in_process=False)
    assert json.loads((out / "results.json").read_text())["status"] == "interrupted"
    assert (out / "job.json").is_file()
    assert f"continue with {command()} --resume {out}" in capsys.readouterr().err


def test_overwrite_replaces_an_earlier_export_folder_and_keeps_the_users_files(tmp_path):
    """--export's folder holds no results.json: its export.json marks it as twinnets', so --overwrite moves the
    earlier files (a SavedModel folder among them) aside instead of renaming the new ones onto them."""
    out = tmp_path / "exported"
    with output_folder(out, "mlp", overwrite=False):
        (out / "export.json").write_text("{}")
        (out / "tf.savedmodel" / "variables").mkdir(parents=True)
        (out / "tf.savedmodel" / "saved_model.pb").write_text("first")
    (out / "mine.txt").write_text("mine")
    with output_folder(out, "mlp", overwrite=True):
        assert sorted(path.name for path in out.iterdir() if not path.name.startswith(".")) == ["mine.txt"]
        (out / "tf.savedmodel").mkdir()
        (out / "tf.savedmodel" / "saved_model.pb").write_text("second")
        (out / "export.json").write_text("{}")
    assert (out / "tf.savedmodel" / "saved_model.pb").read_text() == "second"
    assert (out / "mine.txt").read_text() == "mine" and not (out / ASIDE).exists()
