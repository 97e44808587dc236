"""The command as a user runs it from a folder of their own (the installed `twinnets`), and a run's processes living no
longer than the run: a worker dies with its parent, even a SIGKILLed one, the folder stays locked while any process
of the run lives and resumes afterwards (from a moved data folder too, once its files are checked), and SIGTERM
reaches a worker whose shell ignored Ctrl-C."""
from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_cli import write_fake_mnist

from conftest import COMPARE
from harness.ownership import holder_of

# A small mlp comparison without controls: its TensorFlow worker writes a checkpoint after each epoch of 3 steps.
MLP = ("--task", "mlp", "--sample-size", "400", "--threads", "1", "--control", "none")


def start(*args: str, cwd: Path, ignore_sigint: bool = False) -> subprocess.Popen:
    def setup() -> None:
        if ignore_sigint:  # what a non-interactive shell does to a command started with `&`
            signal.signal(signal.SIGINT, signal.SIG_IGN)

    return subprocess.Popen([sys.executable, COMPARE, *args], cwd=cwd, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, preexec_fn=setup)


def wait_for(path: Path, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert path.exists(), f"{path} never appeared (exit {process.poll()})"


def children(pid: int) -> list[int]:
    """The process ids whose parent is pid (Linux's /proc)."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(child) for child in (task / "children").read_text().split()]
    return found


def alive(pid: int) -> bool:
    """Any thread of the process still running: a zombie has ended (only its parent's wait is missing), but its
    leader turns zombie while its other threads, which share its open files, are still exiting."""
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except FileNotFoundError:
        return False
    for task in tasks:
        try:
            if "\nState:\tZ" not in (task / "status").read_text():
                return True
        except FileNotFoundError:  # that thread has just gone
            continue
    return False


def gone_within(pids: list[int], seconds: float) -> list[int]:
    """The pids still alive after waiting up to `seconds` for them all to end."""
    deadline = time.monotonic() + seconds
    while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    return [pid for pid in pids if alive(pid)]


def test_installed_command_runs_every_path_from_the_users_folder(tmp_path):
    """`twinnets` from a folder of the user's, with a relative --out: the run lands there, and its results name it."""
    command = shutil.which("twinnets")
    if command is None:
        pytest.skip("the twinnets command is not installed (pip install -e .)")
    completed = subprocess.run([command, "--task", "neuron", "--out", "mine/neuron"], cwd=tmp_path,
                               capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr[-2000:]
    results = json.loads((tmp_path / "mine" / "neuron" / "results.json").read_text())
    assert results["parity"]["passed"] is True
    assert f"wrote {tmp_path}/mine/neuron/results.json" in completed.stdout


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_sigkill_of_the_parent_alone_ends_its_worker_and_the_folder_resumes(tmp_path):
    """SIGKILL to the parent only (not its process group): its worker, mid-training, ends at once with it, no
    process holds the folder, and --resume finishes the run."""
    out = tmp_path / "run"
    write_fake_mnist(tmp_path / "digits")
    process = start(*MLP, "--epochs", "30", "--data-dir", "digits", "--out", "run", cwd=tmp_path)
    wait_for(out / "tf" / "checkpoint" / "latest.json", process)
    workers = children(process.pid)
    assert workers, "no worker process found"
    process.kill()
    process.wait()
    assert gone_within(workers, 3) == [], "a worker outlived its parent"
    assert holder_of(out) is None

    # The data folder moved meanwhile: --resume says how to point the run at it, and takes only the same files.
    (tmp_path / "digits").rename(tmp_path / "moved")
    write_fake_mnist(tmp_path / "other", n_train=300)
    refusals = {"gone": ("--resume", "run"), "other": ("--resume", "run", "--data-dir", "other")}
    for case, args in refusals.items():
        refused = subprocess.run([sys.executable, COMPARE, *args], cwd=tmp_path, capture_output=True, text=True,
                                 timeout=60)
        assert refused.returncode == 2 and len(refused.stderr.splitlines()) == 1, refused.stderr
        assert ("the data folder of this run is gone" if case == "gone" else "not the data this run trained on") \
            in refused.stderr, refused.stderr
    resumed = subprocess.run([sys.executable, COMPARE, "--resume", "run", "--data-dir", "moved"], cwd=tmp_path,
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert [len(results["frameworks"][side]["history"]) for side in ("tf", "torch")] == [30, 30]
    assert results["data"]["location"] == str(tmp_path / "moved")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_sigterm_reaches_a_worker_whose_shell_ignored_ctrl_c(tmp_path):
    """A run started with SIGINT ignored (as `&` does): SIGTERM to the parent stops its worker within seconds, not
    after the parent's 30 s grace, and the run exits 143 with its partial report."""
    out = tmp_path / "run"
    process = start(*MLP, "--epochs", "50", "--out", "run", cwd=tmp_path, ignore_sigint=True)
    wait_for(out / "tf" / "checkpoint" / "latest.json", process)
    workers = children(process.pid)
    process.send_signal(signal.SIGTERM)
    stopped = time.monotonic()
    status = process.wait(timeout=60)
    assert status == 143, process.stderr.read()[-2000:]
    assert time.monotonic() - stopped < 20
    assert gone_within(workers, 5) == []
    assert json.loads((out / "results.json").read_text())["status"] == "interrupted"
    assert (out / "job.json").is_file()
