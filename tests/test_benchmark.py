"""The benchmark's methodology, not its speed: the parity gate stops a mismatched pair, the first step is kept
out of the timed steps, the statistics of known times, FLOP counts against the analytic values, and a tiny
benchmark run that writes every row."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from test_cli import PNG_MAGIC, run_cli

import compare
from conftest import side_module
from harness import parity
from harness.benchmark import flops, stock, summary
from harness.benchmark import rows as benchmark
from harness.benchmark import run as benchmark_run
from harness.benchmark.rows import Row
from harness.registry import REGISTRY, TOLERANCES
from shared.execution import Execution
from shared.tasks import make_spec


def test_statistics_of_known_times():
    times = [0.1 * k for k in range(1, 11)]  # 0.1 .. 1.0 s
    stats = benchmark.step_statistics(times, batch_size=8)
    assert stats["steps"] == 10
    assert stats["median_s"] == pytest.approx(0.55)
    assert stats["p10_s"] == pytest.approx(0.19) and stats["p90_s"] == pytest.approx(0.91)  # linear interpolation
    assert stats["mean_s"] == pytest.approx(0.55)
    assert stats["stderr_s"] == pytest.approx(np.std(times, ddof=1) / math.sqrt(10))
    assert stats["samples_per_s"] == pytest.approx(8 / 0.55)
    assert (stats["samples_per_s_p10"] == pytest.approx(8 / 0.91)
            and stats["samples_per_s_p90"] == pytest.approx(8 / 0.19))


def test_first_step_is_timed_alone_and_warmup_is_not_timed():
    """A fake clock: the first call costs 5 s (tracing), warm-up calls 1 s, the steady state 0.1 s."""
    now, calls = [0.0], []

    def step() -> float:
        calls.append(1)
        now[0] += 5.0 if len(calls) == 1 else 1.0 if len(calls) <= 4 else 0.1
        return float(len(calls))

    timing = benchmark.time_steps(step, warmup=3, steps=6, clock=lambda: now[0])
    assert timing["first_step_s"] == pytest.approx(5.0)
    assert timing["times_s"] == pytest.approx([0.1] * 6)
    assert timing["losses"] == [float(k) for k in range(1, 11)]  # every call's loss, first and warm-up included


def test_median_run_of_repeats():
    runs = [{"stats": {"median_s": m}, "id": m} for m in (0.3, 0.1, 0.2)]
    assert benchmark.median_run(runs)["id"] == 0.2
    assert benchmark.median_run(runs[:2])["id"] == 0.1  # even count: the lower middle one


def test_plan_runs_parity_first_and_low_precision_in_the_training_mode():
    modes = {"tf": ["function", "eager", "xla"], "torch": ["eager", "channels_last", "compile"]}
    rows = benchmark.plan_rows(["tf", "torch"], modes, ["fp32", "bf16"], [8], repeat=2)
    assert [r.kind for r in rows[:2]] == ["parity", "parity"]
    steps = [r for r in rows if r.kind == "step"]
    assert len(steps) == 2 * (3 + 1) * 2  # per side: 3 fp32 modes + bf16 in the training mode; 2 processes each
    assert {(r.side, r.mode) for r in steps if r.precision == "bf16"} == {("tf", "function"), ("torch", "eager")}
    every = benchmark.plan_rows(["tf", "torch"], modes, ["fp32", "bf16"], [1, 8], 1, all_combinations=True)
    assert len([r for r in every if r.kind == "step"]) == 2 * 3 * 2 * 2
    assert [r.kind for r in rows[-2:]] == ["pipeline", "pipeline"]
    assert len({r.name for r in rows}) == len(rows)  # each row its own files


def parity_row(parameters: int, digest: str) -> dict:
    return {"parameters": parameters, "weights_sha256": digest, "flops": {}}


def test_parity_gate_names_each_mismatch():
    probe = np.zeros((2, 10), np.float32)
    good = parity.benchmark_parity({"tf": parity_row(10, "a"), "torch": parity_row(10, "a")},
                                   {"tf": probe, "torch": probe + 1e-7}, 1e-5)
    assert good["passed"] and good["problems"] == []
    bad = parity.benchmark_parity({"tf": parity_row(10, "a"), "torch": parity_row(11, "b")},
                                  {"tf": probe, "torch": probe + 0.5}, 1e-5)
    assert not bad["passed"]
    assert len(bad["problems"]) == 3 and "parameter counts differ" in bad["problems"][0]
    assert bad["max_abs_diff"] == pytest.approx(0.5)


def test_parity_gate_stops_a_mismatched_pair_before_any_timing(tmp_path, monkeypatch, capsys):
    """The orchestrator with a fake worker whose two sides load different weights: parity fails, exit 1,
    no step row is ever launched and no timing is printed."""
    launched = []

    def fake_launch(order, nproc=1, threads=1):
        side, job = order.side, json.loads(Path(order.job).read_text())
        row = Row(**job["row"])
        launched.append(row.kind)
        out = tmp_path / "out" / "rows"
        np.save(out / f"{row.name}.probe.npy", np.full((2, 10), 0.0 if side == "tf" else 0.3, np.float32))
        (out / f"{row.name}.json").write_text(json.dumps(
            {**parity_row(199210, side), "row": job["row"], "row_name": row.name}))

    monkeypatch.setattr(benchmark_run, "launch_worker", fake_launch)
    status = compare.main(["--task", "mlp", "--benchmark", "--out", str(tmp_path / "out"), "--steps", "2"])
    printed = capsys.readouterr()
    assert status == 1
    assert launched == ["parity", "parity"]
    assert "parity failed, so no timing is reported" in printed.err and "weights differ" in printed.err
    assert "median" not in printed.out
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["parity"]["passed"] is False and results["rows"] == []


def step_row(side, precision, losses, median):
    return {"side": side, "mode": "eager", "precision": precision, "batch_size": 8, "losses": losses,
            "stats": {"samples_per_s": 8 / median}}


def test_bf16_loss_after_20_steps_is_checked_against_fp32():
    fp32 = step_row("torch", "fp32", [1.0] * 19 + [0.500] + [0.4] * 5, 0.1)
    close = step_row("torch", "bf16", [1.0] * 19 + [0.510] + [0.4] * 5, 0.05)  # 2% off, twice as fast
    far = step_row("tf", "bf16", [1.0] * 19 + [0.600], 0.1)
    checks = summary.precision_checks([fp32, close, far, step_row("tf", "fp32", [1.0] * 19 + [0.5], 0.1)])
    by_side = {check["side"]: check for check in checks}
    assert by_side["torch"]["relative_diff"] == pytest.approx(0.02) and by_side["torch"]["passed"]
    assert by_side["torch"]["speedup_vs_fp32"] == pytest.approx(2.0)
    assert by_side["tf"]["relative_diff"] == pytest.approx(0.2) and not by_side["tf"]["passed"]


def small_conv_net() -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
                               torch.nn.Linear(4 * 8 * 8, 5))


def test_flop_count_of_a_conv_and_a_linear_layer_matches_the_analytic_value():
    torch_benchmark = side_module("torch", "benchmark")
    model = small_conv_net()
    images, targets = torch.randn(2, 3, 8, 8), torch.randint(0, 5, (2,))

    def step(x, y):
        model.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        return 0.0

    counted = torch_benchmark.count_flops(step, images, targets)
    conv, linear = flops.conv_flops(2, 3, 4, 3, 8, 8), flops.linear_flops(2, 4 * 8 * 8, 5)
    assert conv == 2 * 2 * 3 * 4 * 9 * 64 and linear == 2 * 2 * 256 * 5
    # forward both; weight gradients both; the input gradient of the linear layer only (the data needs none)
    assert counted == flops.training_flops([conv, linear]) == 2 * conv + 3 * linear


@pytest.mark.parametrize("task, overrides", [("mlp", {}), ("cnn", {}),
                                             ("unet", {"image_size": 32, "base_filters": 4}),
                                             ("unet", {"variant": "original", "image_size": 188, "base_filters": 2,
                                                       "depth": 4})])
def test_training_flops_of_each_model_match_pytorch_count(task, overrides):
    """The analytic count of harness/benchmark/flops.py against FlopCounterMode on the twinnets train step (exactly)."""
    spec = make_spec(task, **overrides)
    entry, execution = REGISTRY[task], Execution("eager")
    surface = entry.surface("torch", spec)
    model = surface.task.build(spec)
    batch = surface.task.to_tensors(*entry.benchmark_batch(spec, 2, 0), execution)
    step = surface.task.make_train_step(model, surface.task.make_optimizer(model, spec), spec, execution)
    assert side_module("torch", "benchmark").count_flops(step, *batch) == entry.analytic_training_flops(spec, 2)


def test_tensorflow_says_it_cannot_count_training_flops():
    assert side_module("tf", "benchmark").count_flops(lambda x, y: 0.0, None, None) is None


def test_bf16_batch_norm_trains_on_the_tensorflow_side():
    """Under Keras' mixed_bfloat16 policy the U-Net's BatchNorm keeps float32 statistics and the step runs."""
    import keras

    spec = make_spec("unet", image_size=16, base_filters=2, depth=2)
    entry, execution = REGISTRY["unet"], Execution("function", "bf16")
    surface = entry.surface("tf", spec)
    try:
        surface.runtime.configure_execution(execution)
        model = surface.task.build(spec)
        step = surface.task.make_train_step(model, surface.task.make_optimizer(model, spec), spec, execution)
        batch = surface.task.to_tensors(*entry.benchmark_batch(spec, 2, 0), execution)
        losses = [float(step(*batch)) for _ in range(3)]
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert model.layers[0].conv1.compute_dtype == "bfloat16" and model.layers[0].bn1.moving_mean.dtype == "float32"
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]


@pytest.mark.slow  # about 100 s on 2 idle cores: eight worker processes
def test_tiny_benchmark_writes_every_row(tmp_path):
    """mlp, one mode per side (Keras on PyTorch beside the two native sides), fp32 and bf16, 1 warm-up and 3 timed
    steps: every row in results.json, and the Keras API's cost on PyTorch with its interval (a sweep of batch sizes
    is the same rows again; plan_rows is tested with several above)."""
    out = tmp_path / "bench"
    completed = run_cli("--task", "mlp", "--benchmark", "--frameworks", "tf,torch,keras-torch",
                        "--modes", "tf:function,torch:eager,keras-torch:eager",
                        "--precisions", "fp32,bf16", "--warmup", "1", "--steps", "3", "--batch-sizes", "16",
                        "--threads", "1", "--out", str(out), cache=tmp_path / "cache", timeout=600)
    assert completed.returncode == 0, completed.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    sides = ("tf", "torch", "keras-torch")
    assert results["parity"]["passed"] and results["parity"]["parameters"] == dict.fromkeys(sides, 199210)
    assert results["parity"]["arms"]["keras-torch"]["against"] == "tf"
    assert results["parity"]["arms"]["keras-torch"]["max_abs_diff"] <= 1e-5
    rows = {(r["side"], r["mode"], r["precision"], r["batch_size"]) for r in results["rows"]}
    assert rows == {(side, mode, precision, batch)
                    for side, mode in (("tf", "function"), ("torch", "eager"), ("keras-torch", "eager"))
                    for precision in ("fp32", "bf16") for batch in (16,)}
    for row in results["rows"]:
        stats = row["stats"]
        assert len(row["times_s"]) == 3 and len(row["losses"]) == 1 + 1 + 3
        assert stats["p10_s"] <= stats["median_s"] <= stats["p90_s"]
        assert row["gflop_per_s"] > 0 and 0 < row["peak_fraction"]
        assert row["peak_rss_bytes"] > 50 * 2**20
        if row["precision"] == "fp32":
            assert 0 < row["reference"]["throughput_ratio"] and len(row["reference"]["times_s"]) == 3
    for batch in ("16",):
        assert (results["flops"][batch]["agree_within_1pct"]
                and results["flops"][batch]["counted_by"] == "PyTorch FlopCounterMode")
        # Keras' step on PyTorch, counted the same way: the same convolutions and products as the native step
        assert results["flops"][batch]["counted"]["keras-torch"] == results["flops"][batch]["analytic"]
    assert set(results["matmul_peak"]) == {*sides, "numpy"}  # each one's own rate, kept as a fact
    machine = results["machine_peak"]["fp32"]["gflop_per_s"]
    assert machine == max(peaks["fp32"]["gflop_per_s"] for peaks in results["matmul_peak"].values())
    assert [size["n"] for size in results["matmul_peak"]["torch"]["fp32"]["sizes"]][:2] == [512, 1024]
    for row in results["rows"]:  # every percentage against the one machine peak of the row's precision
        assert row["peak_fraction"] == pytest.approx(
            row["gflop_per_s"] / results["machine_peak"][row["precision"]]["gflop_per_s"])
    assert {c["precision"] for c in results["comparisons"]} == {"fp32", "bf16"}
    assert all(c["resamples"] == 2000 and c["low"] <= c["ratio"] <= c["high"] for c in results["comparisons"])
    ratios = results["arm_ratios"]  # keras-torch eager / torch eager, per precision
    assert [(r["kind"], r["precision"], r["numerator"]["side"], r["denominator"]["side"]) for r in ratios] == [
        ("api", precision, "keras-torch", "torch") for precision in ("fp32", "bf16")]
    assert all(0 < r["low"] <= r["ratio"] <= r["high"] < math.inf for r in ratios)
    assert results["failed_rows"] == []
    fairness = results["fairness"]["sides"]
    assert set(fairness) == set(sides) and results["fairness"]["same_tf32_policy"]
    assert fairness["torch"]["settings"]["tf32_matmul"] is False and fairness["tf"]["settings"]["intra_op_threads"] == 1
    assert fairness["keras-torch"]["settings"]["keras_backend"] == "torch"
    assert results["precision_checks"] == []  # 5 steps per row: fewer than the 20 the bf16 loss check compares
    assert (set(results["pipeline"]) == set(sides)
            and all(p["samples_per_s"] > 0 for p in results["pipeline"].values()))
    for png in ("benchmark_throughput.png", "benchmark_step_times.png"):
        assert (out / png).read_bytes()[:8] == PNG_MAGIC
    report = (out / "report.md").read_text()
    assert "passed" in report and "reference loop" in report and "p10-p90" in report
    assert "## Fairness manifest" in report and "## Faster?" in report and "Machine peak: fp32" in report
    assert "## Keras 3's engines" in report and "the Keras API's cost on PyTorch (fp32, batch 16)" in report
    assert "parity passed" in completed.stdout and "samples/s" in completed.stdout
    assert "Keras on PyTorch: max |keras-torch - tf|" in completed.stdout


@pytest.mark.parametrize("flags, message", [
    (["--task", "neuron", "--benchmark"], "--benchmark applies to mlp, cnn and unet"),
    (["--task", "mlp", "--benchmark", "--steps", "0"], "--steps must be positive"),
    (["--task", "mlp", "--benchmark", "--modes", "turbo"], "--modes 'turbo'"),
    (["--task", "mlp", "--benchmark", "--batch-sizes", "8,x"], "--batch-sizes '8,x'"),
    (["--task", "mlp", "--benchmark", "--precisions", "fp16"], "--precisions fp16 needs --device cuda"),
])
def test_bad_benchmark_flags_get_one_line(flags, message, capsys, tmp_path):
    assert compare.main([*flags, "--out", str(tmp_path / "never")]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "never").exists()


def test_data_parallel_rows_time_one_and_n_processes_per_side():
    modes = {"tf": ["function"], "torch": ["eager"]}
    rows = benchmark.plan_rows(["tf", "torch"], modes, ["fp32"], [8], repeat=1, nproc=2)
    scaling = [(r.side, r.nproc) for r in rows if r.kind == "data-parallel"]
    assert scaling == [("tf", 1), ("tf", 2), ("torch", 1), ("torch", 2)]
    assert len({r.name for r in rows}) == len(rows)
    results = [{"row": {"side": side, "nproc": nproc}, "stats": {"median_s": median, "samples_per_s": 8 / median},
                "times_s": [median], "first_step_s": 1.0, "peak_rss_bytes": 1}
               for side, nproc, median in (("tf", 1, 0.2), ("tf", 2, 0.125), ("torch", 1, 0.1), ("torch", 2, 0.1))]
    scaling = summary.scaling_summary(results)
    assert scaling["tf"]["speedup"] == pytest.approx(1.6) and scaling["torch"]["speedup"] == pytest.approx(1.0)
    assert scaling["tf"]["processes"]["2"]["stats"]["samples_per_s"] == pytest.approx(64)


def test_interleaved_timing_alternates_and_keeps_first_steps_apart():
    now, order = [0.0], []

    def make(name: str, first: float, steady: float):
        calls = []

        def step() -> float:
            calls.append(1)
            order.append(name)
            now[0] += first if len(calls) == 1 else steady
            return 0.0
        return step

    timings = benchmark.time_interleaved({"a": make("a", 3.0, 0.2), "b": make("b", 1.0, 0.1)}, warmup=2, steps=3,
                                         clock=lambda: now[0])
    assert order == ["a"] * 3 + ["b"] * 3 + ["a", "b"] * 3  # first + warm-up each, then alternating
    assert timings["a"]["first_step_s"] == pytest.approx(3.0) and timings["b"]["first_step_s"] == pytest.approx(1.0)
    assert timings["a"]["times_s"] == pytest.approx([0.2] * 3) and timings["b"]["times_s"] == pytest.approx([0.1] * 3)
    assert len(timings["a"]["losses"]) == 1 + 2 + 3


# ---- the stock row ------------------------------------------------------------------------------------------

def test_the_stock_rows_follow_the_twins_only_where_a_batchnorm_can_be_swapped():
    """A stock parity row after the twins' parity rows, a stock step row after the twins' steps for each fp32
    tf.function row (per --repeat process), never with the reference loop; none for mlp (no BatchNorm: the stock
    model is the model) or without tf.function, PyTorch's eager step or fp32."""
    modes = {"tf": ["function", "xla"], "torch": ["eager"]}
    twins = benchmark.plan_rows(["tf", "torch"], modes, ["fp32", "bf16"], [8], repeat=2)
    rows = stock.plan(twins, make_spec("unet"), modes, ["fp32", "bf16"])
    added = [row for row in rows if row not in twins]
    assert [(r.kind, r.side, r.mode, r.precision, r.run) for r in added] == [
        ("stock-parity", "tf", "function", "fp32", 1), ("stock", "tf", "function", "fp32", 1),
        ("stock", "tf", "function", "fp32", 2)]
    assert [r.kind for r in rows[:3]] == ["parity", "parity", "stock-parity"]
    assert rows.index(added[1]) > max(index for index, r in enumerate(rows) if r.kind == "step")
    assert [r for r in rows if r in twins] == twins and len({r.name for r in rows}) == len(rows)
    assert not any(r.reference for r in added)
    assert stock.plan(twins, make_spec("mlp"), modes, ["fp32"]) == twins
    assert stock.plan(twins, make_spec("unet"), {"tf": ["xla"], "torch": ["eager"]}, ["fp32"]) == twins
    assert stock.plan(twins, make_spec("unet"), modes, ["bf16"]) == twins
    assert stock.row_spec(make_spec("unet"), added[1]).batch_norm == "stock"
    assert stock.row_spec(make_spec("unet"), twins[0]).batch_norm == "precise"


def test_the_stock_gate_is_looser_than_the_twins_and_names_each_mismatch():
    tolerances = TOLERANCES["unet"]
    parity_rows = {"torch": {"parameters": 10, "weights_sha256": "a"}}
    probes = {"torch": np.zeros((2, 3), np.float32)}
    result = {"parameters": 10, "weights_sha256": "a", "training_diff": 5e-4}
    found = stock.gate(result, probes["torch"] + 3e-8, parity_rows, probes, tolerances)
    assert found["passed"] and 5e-4 > tolerances["forward"]  # beyond the twins' own tolerance, inside the stock one
    assert "max |stock - twins| 0.0005" in stock.gate_lines(found)[0] and "biased" in found["why"]
    failed = stock.gate({**result, "weights_sha256": "b", "training_diff": 2e-3}, probes["torch"] + 1e-3,
                        parity_rows, probes, tolerances)
    assert not failed["passed"] and len(failed["problems"]) == 3
    assert stock.gate_lines(failed)[0].startswith("stock row not timed, its gate failed: its parameters")


def test_stock_against_stock_beside_the_twins_each_with_its_interval():
    rng = np.random.default_rng(0)

    def row(side: str, mode: str, median: float, loss: float) -> dict:
        return {"side": side, "mode": mode, "precision": "fp32", "batch_size": 8, "run_medians_s": [median],
                "times_s": list(median * (1 + 0.01 * rng.standard_normal(30))), "losses": [loss] * 25}

    twins = [row("tf", "function", 0.10, 1.0), row("torch", "eager", 0.08, 1.0), row("torch", "compile", 0.05, 1.0)]
    found = stock.ratios([row("tf", "function", 0.12, 1.00001)], twins)
    assert len(found) == 1
    assert found[0]["stock"]["ratio"] == pytest.approx(1.5, rel=0.02)  # TensorFlow's step time over PyTorch's eager
    assert found[0]["twins"]["ratio"] == pytest.approx(1.25, rel=0.02)
    assert all(r["low"] <= r["ratio"] <= r["high"] and r["distinguishable"] for r in (found[0]["stock"],
                                                                                        found[0]["twins"]))
    assert found[0]["loss_diff"] == {"stock": pytest.approx(1e-5, rel=1e-3), "twins": 0.0}
    lines = stock.ratio_lines({"ratios": found})
    assert lines[0].startswith("stock against stock (fp32, batch 8): TensorFlow tf.function with "
                               "keras.layers.BatchNormalization / PyTorch eager with nn.BatchNorm2d step time 1.5")
    assert "; the twins: TensorFlow tf.function / PyTorch eager 1.2" in lines[0]
    assert stock.ratios([row("tf", "function", 0.12, 1.0)], twins[:1]) == []  # no PyTorch row to compare with


def test_the_stock_parity_row_runs_where_the_plan_puts_it_and_is_gated(tmp_path):
    """run_gate runs the stock parity row with its number in the plan, reads its probe and gates it; no stock
    parity row in the plan, no gate."""
    modes = {"tf": ["function"], "torch": ["eager"]}
    rows = stock.plan(benchmark.plan_rows(["tf", "torch"], modes, ["fp32"], [8], 1), make_spec("unet"), modes,
                      ["fp32"])
    probe = np.zeros((2, 3), np.float32)
    launched = []

    def run(index: int, row: Row) -> dict:
        launched.append((index, row.kind))
        np.save(tmp_path / f"{row.name}.probe.npy", probe + 1e-8)
        return {"parameters": 10, "weights_sha256": "a", "training_diff": 2e-5}

    run.folder = tmp_path
    parity_rows = {"torch": {"parameters": 10, "weights_sha256": "a"}}
    found = stock.run_gate(run, rows, parity_rows, {"torch": probe}, TOLERANCES["unet"])
    assert launched == [(3, "stock-parity")] and found["passed"]
    assert found["max_abs_diff"] == pytest.approx(1e-8) and found["training_diff"] == 2e-5
    twins_only = [row for row in rows if not row.kind.startswith("stock")]
    assert stock.run_gate(run, twins_only, parity_rows, {"torch": probe}, TOLERANCES["unet"]) is None
