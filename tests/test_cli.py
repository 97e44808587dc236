"""compare.py as a user runs it: subprocesses from a folder of the user's, results.json checked against the contract
of docs/architecture.md ("The run folder"), the report and plots on disk, and a one-line error with exit status 2 on
bad input."""
from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from conftest import COMPARE, ROOT, USER_DIR
from harness.registry import TOLERANCES
from shared.data.mnist import MNIST_FILES, write_idx

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
TIMING_KEYS = ("first_step_s", "step_s_median", "samples_per_s", "train_s")


def run_cli(*args: str, cache: Path, timeout: float = 300, cwd: Path = USER_DIR) -> subprocess.CompletedProcess:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "TWINNETS_CACHE": str(cache)}
    return subprocess.run([sys.executable, COMPARE, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


def loaded_results(completed: subprocess.CompletedProcess, out: Path) -> dict:
    """Assert the run succeeded; its results.json, with where it was written and what it printed."""
    assert completed.returncode == 0, (
        f"exit {completed.returncode}\n{completed.stdout[-2000:]}\n{completed.stderr[-3000:]}")
    results = json.loads((out / "results.json").read_text())
    results["_out"] = str(out)
    results["_stdout"] = completed.stdout
    return results


def assert_contract(results: dict, task: str, sides: tuple[str, ...]) -> None:
    """The keys of results.json that scripts read (docs/architecture.md)."""
    assert results["task"] == task
    assert isinstance(results["data"]["source"], str)
    assert isinstance(results["config"], dict) and results["config"]
    environment = results["environment"]
    for key in ("python", "tensorflow", "torch", "cpu", "threads"):
        assert environment.get(key), f"environment.{key} missing"
    assert environment["python"].count(".") == 2 and environment["threads"] >= 1
    parity = results["parity"]
    assert set(parity) >= {"max_abs_diff", "tolerance", "passed"}
    assert parity["tolerance"] == TOLERANCES[task]["parity"]
    if len(sides) == 2:
        assert parity["passed"] is True, parity
        assert 0 <= parity["max_abs_diff"] <= parity["tolerance"]
    else:
        assert parity["passed"] is None and parity["max_abs_diff"] is None
    assert set(results["frameworks"]) == set(sides)
    for side in sides:
        result = results["frameworks"][side]
        for key in ("history", "metrics", "timing", "artifacts"):
            assert key in result, f"frameworks.{side}.{key} missing"
        assert isinstance(result["history"], list) and isinstance(result["metrics"], dict)
        assert isinstance(result["artifacts"], dict)


def assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert len(data) > 100, f"{path.name}: {len(data)} bytes"
    assert data[:8] == PNG_MAGIC, f"{path.name} is not a PNG"
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    assert width > 50 and height > 50, (path.name, width, height)


# ---- the successful runs ------------------------------------------------------------------------------------

def write_fake_mnist(folder: Path, n_train: int = 400, n_test: int = 100, seed: int = 0) -> Path:
    """The four IDX files of a tiny random MNIST."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("test", n_test)):
        write_idx(folder / MNIST_FILES[f"{split}_images"], rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
        write_idx(folder / MNIST_FILES[f"{split}_labels"], rng.integers(0, 10, n, dtype=np.uint8))
    return folder


# The successful runs, longest first. Each takes 8-30 s, mostly one core importing the frameworks, so they
# run two at a time (this machine has two cores) while the tests wait on the one they read.
RUNS = {
    "mlp_digits": ("--task", "mlp", "--epochs", "1", "--sample-size", "400"),
    "mlp_idx": ("--task", "mlp", "--data-dir", "{mnist}", "--epochs", "1", "--control", "none"),
    "mlp_bf16": ("--task", "mlp", "--epochs", "1", "--sample-size", "400", "--precision", "bf16", "--control", "none"),
    "neuron": ("--task", "neuron"),
    "autograd": ("--task", "autograd"),
    "in_process": ("--task", "neuron", "--in-process", "--epochs", "50"),
    "torch_only": ("--task", "autograd", "--frameworks", "torch"),
}


class Runs:
    """The runs, started from their own folder as a user would, with every path relative to it (--out, --data-dir,
    TWINNETS_CACHE); the checkout holds a decoy MNIST of another size under the same relative name, which a path
    resolved in the workers' folder instead of the user's would train on."""

    def __init__(self, base: Path, pool: ThreadPoolExecutor, decoy_name: str):
        self.base = base
        write_fake_mnist(base / decoy_name)
        self.futures = {
            # One thread per side: two runs share the two cores, and oversubscribed OpenMP threads crawl.
            name: pool.submit(run_cli, *(a.format(mnist=decoy_name) for a in args), "--threads", "1",
                              "--out", name, cache=Path("cache"), cwd=base)
            for name, args in RUNS.items()}

    def __getitem__(self, name: str) -> dict:
        return loaded_results(self.futures[name].result(), self.base / name)


def checkout_entries() -> set[str]:
    return {path.name for path in ROOT.iterdir() if not path.name.startswith((".", "__"))}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    decoy = ROOT / f"twinnets-test-mnist-{os.getpid()}"
    before = checkout_entries()
    write_fake_mnist(decoy, n_train=200, n_test=50, seed=1)
    try:
        with ThreadPoolExecutor(max_workers=2) as pool:
            yield Runs(tmp_path_factory.mktemp("cli"), pool, decoy.name)
    finally:
        shutil.rmtree(decoy, ignore_errors=True)
    # Nothing of a run lands in the checkout: no runs/, no cache of a relative TWINNETS_CACHE.
    assert checkout_entries() <= before, sorted(checkout_entries() - before)


@pytest.fixture(scope="module")
def neuron(runs) -> dict:
    return runs["neuron"]


@pytest.fixture(scope="module")
def autograd(runs) -> dict:
    return runs["autograd"]


# ---- neuron and autograd, both sides ---------------------------------------------------------------------

def test_neuron_results_follow_the_contract(neuron):
    assert_contract(neuron, "neuron", ("tf", "torch"))
    assert neuron["data"]["source"] == "none"
    assert neuron["config"]["phi"] == -0.23 and neuron["config"]["target"] == 0.74
    epochs = neuron["config"]["epochs"]
    for side in ("tf", "torch"):
        result = neuron["frameworks"][side]
        for key in TIMING_KEYS:
            assert result["timing"][key] is not None and result["timing"][key] > 0, f"{side} timing.{key}"
        trajectory = result["trajectory"]
        assert len(trajectory) == epochs + 1 and len(result["history"]) == epochs
        assert set(trajectory[0]) >= {"step", "w", "b", "output", "error"}
        assert abs(result["final_output"] - 0.74) <= 1e-3
        assert result["final_output"] == trajectory[-1]["output"]
    assert neuron["frameworks"]["tf"]["traces"] == 1


def test_neuron_writes_report_and_plots(neuron):
    out = Path(neuron["_out"])
    report = (out / "report.md").read_text()
    assert report.startswith("# twinnets: neuron")
    for name in ("neuron_surface.png", "loss.png"):
        assert f"]({name})" in report
        assert_png(out / name)
    assert not (out / "job.json").exists()
    assert "parity: max |tf - torch|" in neuron["_stdout"] and "PASSED" in neuron["_stdout"]


def test_each_side_records_the_variables_it_ran_with(neuron):
    """From each worker's own process: the tf worker's KERAS_BACKEND is twinnets'; the user's variables pass as they
    were (run_cli sets TF_CPP_MIN_LOG_LEVEL=3); report.md's header lists them."""
    environment = neuron["environment"]
    assert environment["variables"]["tf"]["KERAS_BACKEND"] == "tensorflow"
    assert environment["variables"]["torch"].get("KERAS_BACKEND") == os.environ.get("KERAS_BACKEND")  # the user's
    if os.environ.get("KERAS_BACKEND") != "tensorflow":
        assert "KERAS_BACKEND" in environment["variables_set_by_twinnets"]["tf"]
    for side in ("tf", "torch"):
        assert environment["variables"][side]["TF_CPP_MIN_LOG_LEVEL"] == "3"
        assert "TF_CPP_MIN_LOG_LEVEL" not in environment["variables_set_by_twinnets"][side]
    assert "Environment variables (* set by twinnets" in (Path(neuron["_out"]) / "report.md").read_text()


def test_outputs_are_readable_as_the_umask_allows(neuron):
    umask = os.umask(0)
    os.umask(umask)
    expected = 0o666 & ~umask
    out = Path(neuron["_out"])
    modes = {name: (out / name).stat().st_mode & 0o777 for name in ("results.json", "report.md", "loss.png")}
    assert modes == dict.fromkeys(modes, expected), {k: oct(v) for k, v in modes.items()}


def test_autograd_results_follow_the_contract(autograd):
    assert_contract(autograd, "autograd", ("tf", "torch"))
    tf_result, torch_result = autograd["frameworks"]["tf"], autograd["frameworks"]["torch"]
    assert tf_result["grad"] == torch_result["grad"] == [[13.0, 13.0], [13.0, 13.0]]
    assert "Pow" in tf_result["graph"] and "AddV2" in tf_result["graph"]
    assert "PowBackward0" in torch_result["graph"] and "AccumulateGrad" in torch_result["graph"]
    assert tf_result["tracing"]["traces"] == 2 and torch_result["tracing"]["traces"] == 0
    assert autograd["parity"]["max_abs_diff"] == 0.0


def test_autograd_writes_report_and_plot(autograd):
    out = Path(autograd["_out"])
    report = (out / "report.md").read_text()
    assert "](graphs.png)" in report
    # Each side's section states its gradient, the 2x2 of 13s that z = 2x^2 + 5x gives at x = 2.
    assert report.count("dz/dx = [[13.0, 13.0], [13.0, 13.0]] (expected 4x + 5 = 13)") == 2, report
    assert_png(out / "graphs.png")


# ---- one side, in-process ---------------------------------------------------------------------------------

def test_one_framework_only(runs):
    results = runs["torch_only"]
    assert_contract(results, "autograd", ("torch",))
    assert "tf" not in results["frameworks"] and not (Path(results["_out"]) / "tf").exists()
    assert results["config"]["frameworks"] == ["torch"]


def test_in_process_neuron(runs):
    results = runs["in_process"]
    assert_contract(results, "neuron", ("tf", "torch"))
    assert results["environment"]["process"] == "one shared process"
    assert len(results["frameworks"]["tf"]["trajectory"]) == 51


# ---- bad input: one line, exit status 2 ---------------------------------------------------------------------

@pytest.mark.parametrize("args, words", [
    (["--task", "neuron", "--no-such-flag"], "--no-such-flag"),
    (["--task", "neuron", "--batch-size", "3"], "--batch-size"),
    (["--task", "neuron", "--epochs", "0"], "--epochs"),
    (["--task", "neuron", "--frameworks", "mxnet"], "mxnet"),
    (["--task", "neuron", "--data-dir", "."], "--data-dir"),
    (["--task", "mlp", "--data-dir", "/nonexistent"], "/nonexistent"),
    (["--task", "nosuchtask"], "nosuchtask"),
], ids=["unknown-flag", "batch-size-neuron", "epochs-0", "frameworks-mxnet", "data-dir-neuron", "data-dir-missing",
        "unknown-task"])
def test_bad_input_exits_2_with_one_line(tmp_path, args, words):
    completed = run_cli(*args, "--out", str(tmp_path / "out"), cache=tmp_path / "cache", timeout=60)
    assert completed.returncode == 2, (completed.returncode, completed.stderr[-2000:])
    lines = completed.stderr.splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{completed.stderr}"
    assert lines[0].startswith("compare.py: error: ") and words in lines[0], lines[0]
    assert "Traceback" not in completed.stdout


# ---- mlp on data ------------------------------------------------------------------------------------------

def assert_classifier_run(results: dict) -> None:
    assert_contract(results, "mlp", ("tf", "torch"))
    for side in ("tf", "torch"):
        result = results["frameworks"][side]
        # The accuracy is the one the saved test predictions give: the confusion matrix's diagonal share.
        confusion = np.asarray(result["confusion_matrix"])
        assert confusion.shape == (10, 10) and confusion.sum() == results["data"]["test"], confusion.shape
        assert result["metrics"]["test_accuracy"] == pytest.approx(np.trace(confusion) / confusion.sum(), abs=1e-12)
        assert result["metrics"]["test_accuracy"] == result["history"][-1]["test_accuracy"]
        assert result["metrics"]["parameters"] == 199_210
        for key in TIMING_KEYS:
            assert result["timing"][key] is not None and result["timing"][key] > 0, f"{side} timing.{key}"
        checkpoint = Path(result["artifacts"]["checkpoint"])  # relative to the run folder
        assert not checkpoint.is_absolute() and (Path(results["_out"]) / checkpoint).is_file()
        assert (Path(results["_out"]) / checkpoint).stat().st_size > 4 * 199_210
        assert len(result["history"]) == 1 and result["history"][0]["epoch"] == 1
    out = Path(results["_out"])
    for name in ("loss.png", "confusion.png"):
        assert_png(out / name)


def test_mlp_tiny_run_on_embedded_digits(runs):
    results = runs["mlp_digits"]
    assert_classifier_run(results)
    assert results["data"]["source"] == "sklearn-digits"
    assert results["data"]["train"] == 400
    assert "jittered" in results["data"].get("note", ""), results["data"]
    losses = [results["frameworks"][s]["batch_losses"] for s in ("tf", "torch")]
    assert len(losses[0]) == len(losses[1]) == 2
    np.testing.assert_allclose(losses[0], losses[1], rtol=TOLERANCES["mlp"]["trained_loss"])


def test_each_side_trains_a_control_and_the_drift_gets_a_verdict(runs):
    """The default control: each side again from initial weights 1 ulp away; three pairs of drift curves, the
    verdict in results.json, the console and report.md, and drift.png."""
    results = runs["mlp_digits"]
    drift = results["drift"]
    assert drift["control"] == "ulp" and set(results["controls"]) == {"tf", "torch"}
    assert set(drift["pairs"]) == {"tf-torch", "tf-control", "torch-control"}
    for pair, found in drift["pairs"].items():
        assert found["weight_steps"] == [0, 1, 2] and len(found["loss"]) == 2, pair
    assert drift["pairs"]["tf-torch"]["weights"][0] == 0.0  # the same canonical initial weights on both sides
    for pair in ("tf-control", "torch-control"):  # one ulp is 2^-23 to 2^-24 of each value
        assert 2e-8 < drift["pairs"][pair]["weights"][0] < 3e-7, drift["pairs"][pair]["weights"]
    assert isinstance(drift["verdict"]["within_noise"], bool) and drift["verdict"]["steps_compared"] == 2
    for side in ("tf", "torch"):
        assert 0.0 <= results["controls"][side]["metrics"]["test_accuracy"] <= 1.0
        assert len(results["controls"][side]["batch_losses"]) == 2
    out = Path(results["_out"])
    assert_png(out / "drift.png")
    report = (out / "report.md").read_text()
    assert "## Equal up to rounding?" in report and drift["verdict"]["sentence"] in report
    assert "equal up to rounding? " + drift["verdict"]["sentence"] in results["_stdout"]


# The autograd graph of one mlp step, node by node: NllLoss, LogSoftmax, three Addmm (fc1-3), two Relu, three T
# (each weight transposed for its Addmm) and an AccumulateGrad leaf per parameter tensor (3 weights, 3 biases).
MLP_AUTOGRAD_NODES = 1 + 1 + 3 + 2 + 3 + 6


def test_the_report_measures_both_kinds_of_graph(runs):
    """TensorFlow: one trace, the ops of its graph; PyTorch: no trace, the autograd graph a step records, counted
    node by node (an edge count, a chain without its leaves or a second step's graph added would each differ), each
    with the sentence in report.md."""
    results = runs["mlp_digits"]
    tf, torch = (results["frameworks"][side]["graph"] for side in ("tf", "torch"))
    assert tf["traces"] == 1 and tf["graph_ops"] > 50 and tf["autograd_nodes"] is None, tf
    assert torch["autograd_nodes"] == MLP_AUTOGRAD_NODES, torch
    report = (Path(results["_out"]) / "report.md").read_text()
    assert f"one graph of {tf['graph_ops']:,} ops" in report
    assert f"recording an autograd graph of {torch['autograd_nodes']:,} nodes" in report


def test_mlp_trains_in_bf16_mixed_precision_on_both_sides(runs):
    """Parity is measured in float32 before the bf16 model is built; the bf16 losses track each other and
    differ from the float32 run's (so the precision really changed)."""
    results, fp32 = runs["mlp_bf16"], runs["mlp_digits"]
    assert results["parity"]["passed"]
    assert results["config"]["precision"] == "bf16"
    bf16_losses = [results["frameworks"][s]["batch_losses"] for s in ("tf", "torch")]
    for side in ("tf", "torch"):
        assert results["frameworks"][side]["execution"]["precision"] == "bf16"
        assert np.max(np.abs(np.subtract(bf16_losses[side == "torch"],
                                         fp32["frameworks"][side]["batch_losses"]))) > 1e-5
    np.testing.assert_allclose(bf16_losses[0], bf16_losses[1], rtol=TOLERANCES["mlp"]["bf16_loss"])


def test_mlp_on_idx_files(runs):
    results = runs["mlp_idx"]
    assert_classifier_run(results)
    assert results["data"]["source"] == "mnist"
    assert results["data"]["train"] == 400 and results["data"]["test"] == 100
    assert results["config"]["epochs"] == 1


def test_truncated_idx_file_exits_2_naming_the_file(tmp_path):
    data_dir = write_fake_mnist(tmp_path / "mnist", n_train=50, n_test=20)
    broken = data_dir / MNIST_FILES["train_images"]
    broken.write_bytes(broken.read_bytes()[:-100])
    completed = run_cli("--task", "mlp", "--data-dir", str(data_dir), "--out", str(tmp_path / "out"),
                        cache=tmp_path / "cache", timeout=60)
    assert completed.returncode == 2, completed.stderr[-2000:]
    lines = completed.stderr.splitlines()
    assert len(lines) == 1, completed.stderr
    assert str(broken) in lines[0] and "truncated" in lines[0], lines[0]
    assert not (tmp_path / "out" / "results.json").exists()
