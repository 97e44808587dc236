"""compare.py's command line: every mode's flags mean the same in any order, an abbreviation is refused, and the
workers' command line (harness/worker.py) is a parser of its own."""
from __future__ import annotations

import subprocess
import sys

import pytest

import compare
from conftest import ROOT
from harness.jobs import Run, WorkerOrder

# Each mode's flags, in the order a user might type them; the test also tries them reversed (pairs kept together).
MODES = {
    "train": [["--task", "mlp"], ["--epochs", "1"], ["--seed", "3"]],
    "diagnose": [["--diagnose", "3"], ["--task", "mlp"]],
    "benchmark": [["--benchmark"], ["--task", "mlp"], ["--steps", "2"]],
    "seeds": [["--seeds", "2"], ["--task", "cnn"]],
    "predict": [["--predict", "RUN"], ["--task", "mlp"], ["--frameworks", "torch"]],
    "resume": [["--resume", "RUN"], ["--in-process"], ["--data-dir", "MOVED"]],
}


@pytest.fixture
def called(monkeypatch) -> list:
    """Each mode's entry replaced by a recorder of the mode and the flags it got."""
    calls = []
    monkeypatch.setattr(compare.comparison, "compare", lambda spec, sides, args: calls.append(("train", vars(args))))
    monkeypatch.setattr(compare.diagnose, "run_diagnose",
                        lambda spec, sides, args: calls.append(("diagnose", vars(args))))
    monkeypatch.setattr(compare.benchmark_run, "run_benchmark",
                        lambda spec, sides, args: calls.append(("benchmark", vars(args))))
    monkeypatch.setattr(compare.seeds, "run_seeds", lambda spec, sides, args, s: calls.append(("seeds", vars(args))))
    monkeypatch.setattr(compare.predict, "main", lambda args: calls.append(("predict", vars(args))) or 0)
    monkeypatch.setattr(compare, "resume", lambda out, in_process, data_dir: calls.append(
        ("resume", (str(out), in_process, data_dir))))
    return calls


@pytest.mark.parametrize("mode", list(MODES))
def test_each_mode_takes_its_flags_in_any_order(mode, called):
    pairs = MODES[mode]
    assert compare.main([flag for pair in pairs for flag in pair]) == 0
    assert compare.main([flag for pair in reversed(pairs) for flag in pair]) == 0
    assert [found[0] for found in called] == [mode, mode]
    assert called[0][1] == called[1][1]  # the same settings either way


def test_an_abbreviated_mode_flag_is_refused(called, capsys):
    """--pred must not pass for --predict (argparse would expand it and train instead when both are unknown)."""
    assert compare.main(["--task", "mlp", "--pred", "RUN"]) == 2
    assert "unrecognized arguments: --pred RUN" in capsys.readouterr().err
    assert called == []


def test_a_worker_order_survives_its_command_line_and_a_bad_one_is_refused():
    order = WorkerOrder("train", "tf", "/tmp/job.json", (Run("tf"), Run("tf", control=True)))
    assert WorkerOrder.from_argument(order.to_argument()) == order
    with pytest.raises(ValueError):
        WorkerOrder.from_argument(WorkerOrder("train", "tf", "job.json", (Run("torch"),)).to_argument())
    finished = subprocess.run([sys.executable, "-m", "harness.worker"], cwd=ROOT, capture_output=True, text=True,
                              timeout=120)
    assert finished.returncode == 2 and "usage: python -m harness.worker ORDER" in finished.stderr


def test_all_frameworks_means_the_five_and_the_arms_reach_the_comparison(called):
    assert compare.main(["--task", "unet", "--frameworks", "all"]) == 0
    assert compare.main(["--task", "mlp", "--frameworks", "keras-jax,torch"]) == 0
    sides = [compare.parse_args(["--task", "unet", "--frameworks", "all"])[2],
             compare.parse_args(["--task", "mlp", "--frameworks", "keras-jax,torch"])[2]]
    assert sides == [["tf", "torch", "keras-tf", "keras-jax", "keras-torch"], ["keras-jax", "torch"]]
    assert [found[0] for found in called] == ["train", "train"]


@pytest.mark.parametrize("flags, said", [
    (["--task", "autograd", "--frameworks", "tf,keras-jax"], "the Keras arms train mlp, cnn and unet"),
    (["--task", "mlp", "--frameworks", "keras-torch", "--in-process"], "leave out --in-process"),
    (["--task", "mlp", "--frameworks", "tf,keras-tf", "--diagnose", "2"], "--diagnose and --nproc compare"),
    (["--task", "unet", "--frameworks", "keras-jax", "--device", "cuda"], "the Keras arms run on the CPU"),
    (["--task", "mlp", "--frameworks", "keras-mxnet"], "choose from tf, torch, keras-tf, keras-jax, keras-torch"),
])
def test_what_the_arms_cannot_do_is_refused_in_one_line(flags, said, called, capsys):
    assert compare.main(flags) == 2
    error = capsys.readouterr().err
    assert said in error and error.count("\n") == 1
    assert called == []
