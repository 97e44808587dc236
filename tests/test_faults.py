"""Nothing lost, nothing silently wrong: a run killed (SIGKILL, SIGTERM) at several points resumes to the figures of
an uninterrupted run, drift included; a run folder can be moved or copied and resumed from there; a folder a run
owns is locked; every numeric flag is checked before any work; non-finite weights are refused."""
from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import compare
from conftest import COMPARE, ROOT, USER_DIR
from harness.ownership import LOCK, holder_of, owned_folder
from shared.tasks import make_spec
from shared.weights import save_weights, unet_layout

# A small mlp comparison with both sides and their 1-ulp controls: 3 epochs of 3 steps, about 30 s on 2 cores.
MLP = ("--task", "mlp", "--epochs", "3", "--sample-size", "600", "--threads", "1")


def start(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, COMPARE, *args], cwd=USER_DIR, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def finish(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, COMPARE, *args], cwd=USER_DIR, capture_output=True, text=True,
                          timeout=timeout)


def wait_for(path: Path, process: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert path.exists(), f"{path} never appeared (exit {process.poll()})"


def figures(out: Path) -> dict:
    """What results.json says of a run, less what depends on the clock or the machine's state."""
    results = json.loads((out / "results.json").read_text())
    runs = {**results["frameworks"], **{f"{side}-control": found for side, found in results["controls"].items()}}
    drift = results["drift"]
    return {"losses": {name: found["batch_losses"] for name, found in runs.items()},
            "history": {name: [{k: v for k, v in h.items() if k != "lr"} for h in found["history"]]
                        for name, found in runs.items()},
            "weight_steps": {pair: found["weight_steps"] for pair, found in drift["pairs"].items()},
            "weights": {pair: found["weights"] for pair, found in drift["pairs"].items()},
            "median_ratio": drift["verdict"]["median_ratio"], "parity": results["parity"]["max_abs_diff"]}


def assert_same_figures(resumed: dict, whole: dict) -> None:
    assert resumed["weight_steps"] == whole["weight_steps"]  # the drift record survived the kill, every step of it
    for key in ("losses", "history"):
        assert resumed[key].keys() == whole[key].keys()
        for name in whole[key]:
            np.testing.assert_allclose(as_numbers(resumed[key][name]), as_numbers(whole[key][name]), rtol=0,
                                       atol=1e-6, err_msg=name)
    for pair in whole["weights"]:
        np.testing.assert_allclose(resumed["weights"][pair], whole["weights"][pair], rtol=1e-3, atol=1e-9)
    assert math.isclose(resumed["median_ratio"], whole["median_ratio"], rel_tol=1e-2)
    assert resumed["parity"] == whole["parity"]


def as_numbers(values) -> np.ndarray:
    """Losses, or epoch records flattened to their numbers."""
    if values and isinstance(values[0], dict):
        return np.array([[record[key] for key in sorted(record)] for record in values], np.float64)
    return np.asarray(values, np.float64)


@pytest.fixture(scope="module")
def whole_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("whole") / "run"
    completed = finish(*MLP, "--out", str(out))
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "triggered tf.function retracing" not in completed.stderr  # each step traced once per model and shape
    return out


@pytest.fixture(scope="module")
def whole(whole_run) -> dict:
    return figures(whole_run)


# Where the run is killed: inside TensorFlow's training (its first checkpoint), after TensorFlow's last epoch (its
# control, which runs next in the same process, has begun), between the two sides.
KILL_POINTS = {
    "tensorflow mid-training": "tf/checkpoint/latest.json",
    "tensorflow after its last epoch": "tf-control/checkpoint/latest.json",
    "between the sides": "tf-control/result.json",
}


@pytest.mark.slow
@pytest.mark.parametrize("point", list(KILL_POINTS))
def test_sigkill_at_any_point_then_resume_from_a_moved_copy_gives_the_uninterrupted_figures(point, whole, tmp_path):
    """SIGKILL (the parent and its worker) once the point's file exists; the folder is then copied elsewhere and
    the original moved away, so only relative paths can work; --resume of the copy gives the figures of a run
    never interrupted, the drift record and its verdict included."""
    killed = tmp_path / "killed"
    process = start(*MLP, "--out", str(killed))
    wait_for(killed / KILL_POINTS[point], process)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert not (killed / "results.json").exists() and (killed / "job.json").is_file()
    copy = tmp_path / "elsewhere" / "copy"
    shutil.copytree(killed, copy)
    killed.rename(tmp_path / "moved")  # nothing may still point at the first place
    resumed = finish("--resume", str(copy))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert not (tmp_path / "killed").exists(), "the resumed run wrote into the folder's first place"
    assert_same_figures(figures(copy), whole)
    results = json.loads((copy / "results.json").read_text())
    assert not Path(results["frameworks"]["tf"]["artifacts"]["checkpoint"]).is_absolute()


def test_a_moved_run_folder_predicts_from_its_new_place(whole_run, tmp_path):
    moved = tmp_path / "moved"
    shutil.copytree(whole_run, moved)
    completed = finish("--predict", str(moved), "--frameworks", "torch", "--threads", "1", "--out",
                       str(tmp_path / "predicted"))
    assert completed.returncode == 0, completed.stderr[-2000:]
    results = json.loads((tmp_path / "predicted" / "results.json").read_text())
    assert Path(results["weights"]["torch"]["file"]).is_relative_to(moved.resolve())
    assert results["frameworks"]["torch"]["rows"] == 359  # the embedded digits' test set


@pytest.mark.slow
def test_a_killed_seeds_series_resumes_and_keeps_the_seeds_it_finished(tmp_path):
    out = tmp_path / "seeds"
    args = ("--task", "mlp", "--epochs", "1", "--sample-size", "200", "--frameworks", "torch", "--control", "none",
            "--threads", "1", "--seeds", "2", "--out", str(out))
    process = start(*args)
    wait_for(out / "seed-0" / "results.json", process)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    first = (out / "seed-0" / "results.json").read_text()
    resumed = finish("--resume", str(out))
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "seed 0: finished before" in resumed.stdout
    assert (out / "seed-0" / "results.json").read_text() == first  # not run again
    results = json.loads((out / "results.json").read_text())
    assert results["seeds"]["seeds"] == [0, 1] and results["seeds"]["runs"] == {"0": "seed-0", "1": "seed-1"}
    assert not (out / "job.json").exists()


def test_an_unwritable_place_is_one_line(tmp_path, monkeypatch, capsys):
    assert compare.main(["--task", "unet", "--epochs", "1", "--out", "/proc/twinnets"]) == 2
    monkeypatch.setenv("TWINNETS_CACHE", "/proc/x")  # where the embedded photos would be generated
    assert compare.main(["--task", "unet", "--epochs", "1", "--out", str(tmp_path / "x")]) == 2
    errors = capsys.readouterr().err.splitlines()
    assert len(errors) == 2 and all(line.startswith("compare.py: error: /proc/") for line in errors), errors
    assert not (tmp_path / "x").exists()


def test_sigterm_stops_the_worker_writes_the_partial_report_and_exits_143(tmp_path):
    out = tmp_path / "run"
    process = start(*MLP, "--out", str(out))
    wait_for(out / "tf" / "checkpoint" / "latest.json", process)
    process.send_signal(signal.SIGTERM)  # the parent alone: its worker must not be left training as an orphan
    assert process.wait(timeout=120) == 143
    partial = json.loads((out / "results.json").read_text())
    assert partial["status"] == "interrupted" and (out / "job.json").is_file()
    assert subprocess.run(["pgrep", "-f", str(out)], capture_output=True).stdout == b""  # no worker left behind


def test_a_folder_in_use_is_refused_naming_its_holder_until_the_holder_dies(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    script = ("import time; from pathlib import Path; from harness.ownership import owned_folder\n"
              f"with owned_folder(Path({str(out)!r})):\n    print('held', flush=True); time.sleep(600)")
    holder = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    assert holder_of(out) == str(holder.pid)  # what --predict asks of the run folder it reads
    try:
        for argv in (["--task", "neuron", "--out", str(out), "--overwrite"], ["--resume", str(out)]):
            status, error = run_main(argv)
            assert status == 2 and f"process {holder.pid}" in error, error
    finally:
        holder.kill()  # SIGKILL: the kernel drops the lock with the process
        holder.wait()
    assert holder_of(out) is None
    with owned_folder(out):  # free again: no stale lock
        assert (out / LOCK).read_text().strip() == str(os.getpid())


def run_main(argv: list[str]) -> tuple[int, str]:
    completed = finish(*argv, timeout=300)
    return completed.returncode, completed.stderr


NUMERIC = [("--lr", "nan"), ("--lr", "inf"), ("--lr", "-1"), ("--lr", "0"), ("--lr", "1e12"), ("--epochs", "0"),
           ("--epochs", "-3"), ("--epochs", "1000000000"), ("--seed", "-1"), ("--seed", "99999999999"),
           ("--batch-size", "0"), ("--batch-size", "1000000000"), ("--sample-size", "0"), ("--threads", "0"),
           ("--threads", "100000"), ("--workers", "-1"), ("--validation-size", "nan"), ("--nproc", "0"),
           ("--nproc", "100000"), ("--epochs", "nan"), ("--threads", "inf")]
UNET_NUMERIC = [("--image-size", "0"), ("--image-size", "100000"), ("--image-size", "32768"), ("--base-filters", "0"),
                ("--validation-size", "1.5"), ("--warmup-epochs", "-1")]


@pytest.mark.parametrize("task, flag, value", [("mlp", *case) for case in NUMERIC]
                         + [("unet", *case) for case in UNET_NUMERIC])
def test_every_numeric_flag_is_checked_before_any_work(task, flag, value, tmp_path, capsys):
    out = tmp_path / "never"
    assert compare.main(["--task", task, flag, value, "--out", str(out)]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and error.startswith("compare.py: error: ") and flag in error, error
    assert not out.exists()


def test_a_size_that_cannot_fit_is_refused_with_the_estimate_and_the_memory(capsys):
    assert compare.main(["--task", "unet", "--image-size", "16384"]) == 2
    error = capsys.readouterr().err
    assert "GiB of activations, more than this machine's" in error and "GiB of memory" in error


def test_non_finite_weights_are_refused_naming_the_file_and_the_tensor(tmp_path, capsys):
    spec = make_spec("unet")
    weights = {name: np.zeros(param.shape, np.float32) for name, param in unet_layout(spec).items()}
    weights["dec1.conv2.weight"] = np.full(weights["dec1.conv2.weight"].shape, np.nan, np.float32)
    path = save_weights(weights, tmp_path / "diverged.safetensors")
    assert compare.main(["--task", "unet", "--init-weights", str(path), "--out", str(tmp_path / "never")]) == 2
    error = capsys.readouterr().err
    assert str(path) in error and "dec1.conv2.weight holds NaN or infinite values" in error


def test_resume_refuses_flags_it_would_ignore(tmp_path, capsys):
    assert compare.main(["--resume", str(tmp_path), "--epochs", "5", "--seed", "3"]) == 2
    assert "leave out --epochs, --seed" in capsys.readouterr().err


def test_overwrite_checks_everything_before_it_replaces_a_run(tmp_path, capsys):
    out = tmp_path / "run"
    (out / "tf" / "checkpoint").mkdir(parents=True)
    (out / "results.json").write_text("{}")
    assert compare.main(["--task", "mlp", "--out", str(out), "--overwrite", "--data-dir", str(tmp_path / "none")]) == 2
    assert (out / "tf" / "checkpoint").is_dir() and (out / "results.json").read_text() == "{}"


def test_a_damaged_latest_json_falls_back_to_the_last_complete_epoch(tmp_path):
    from shared.checkpoint import LATEST, load_checkpoint, save_checkpoint

    weights = {"w": np.ones(3, np.float32)}
    for epoch in (1, 2):
        save_checkpoint(tmp_path, epoch, weights, lambda path: path.with_suffix(".npz").write_bytes(b""),
                        {"seed": 0, "epoch": epoch})
    (tmp_path / LATEST).write_text('{"epoch": 2, "fol')  # a disk that filled up mid-write
    found = load_checkpoint(tmp_path)
    assert found.epoch == 2 and found.log == {"seed": 0, "epoch": 2}
    shutil.rmtree(tmp_path / "epoch-2")
    with pytest.raises(Exception, match="damaged, and no complete checkpoint beside it"):
        load_checkpoint(tmp_path)


def test_written_files_get_the_umask_mode(tmp_path):
    path = save_weights({"w": np.ones(2, np.float32)}, tmp_path / "model.safetensors")
    assert path.stat().st_mode & 0o777 == 0o666 & ~_umask()


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
