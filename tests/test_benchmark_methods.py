"""The benchmark's methods on known numbers: one machine peak (a row above it is a measurement error), the
presets, the bootstrap interval of "faster", the fairness manifest, the GPU row plan and the golden-file check."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

import compare
from harness.benchmark import arms, cpu_load, report, summary
from harness.benchmark import golden as benchmark_golden
from harness.benchmark import peak as benchmark_peak
from harness.benchmark import presets as benchmark_presets
from harness.benchmark import rows as benchmark
from harness.benchmark import run as benchmark_run
from harness.benchmark import stats as benchmark_stats
from harness.benchmark.fairness import manifest
from harness.benchmark.rows import Row
from harness.launch import SideFailed
from shared.errors import UserError
from shared.tasks import make_spec

# ---- one machine peak ------------------------------------------------------------------------------------------


def fake_matmul(gflops: dict[int, float], now: list[float]):
    """A product of size n that takes 2 n^3 / rate seconds on a fake clock."""
    return lambda n: (lambda: now.__setitem__(0, now[0] + 2 * n**3 / (gflops[n] * 1e9)))


def test_peak_is_the_best_size_and_slow_sizes_are_skipped():
    now = [0.0]
    rates = benchmark_peak.measure_matmul_rates(fake_matmul({512: 40.0, 1024: 60.0, 2048: 55.0}, now),
                                                sizes=(512, 1024, 2048), clock=lambda: now[0])
    assert [size["n"] for size in rates["sizes"]] == [512, 1024, 2048]
    assert rates["n"] == 1024 and rates["gflop_per_s"] == pytest.approx(60.0)
    # 1 GFLOP/s at n=512: n=1024 would take 2.1 s, over MAX_PRODUCT_S, so it is not tried
    slow = benchmark_peak.measure_matmul_rates(fake_matmul({512: 1.0}, now), sizes=(512, 1024), clock=lambda: now[0])
    assert [size["n"] for size in slow["sizes"]] == [512] and slow["gflop_per_s"] == pytest.approx(1.0)


def test_machine_peak_is_the_best_source_and_numpy_counts_on_the_cpu_only():
    sources = {"tf": {"fp32": {"gflop_per_s": 200.1, "n": 2048}, "bf16": {"gflop_per_s": 90.0, "n": 1024}},
               "torch": {"fp32": {"gflop_per_s": 142.1, "n": 2048}, "bf16": {"gflop_per_s": 150.0, "n": 2048}},
               "numpy": {"fp32": {"gflop_per_s": 210.0, "n": 1024}}}
    cpu = benchmark_peak.machine_peak(sources, "cpu")
    assert cpu["fp32"] == {"gflop_per_s": 210.0, "n": 1024, "source": "numpy"}
    assert cpu["bf16"]["source"] == "torch"
    assert benchmark_peak.machine_peak(sources, "cuda")["fp32"]["source"] == "tf"
    assert benchmark_peak.peak_precisions("cuda") == ("fp32", "tf32", "bf16", "fp16")
    assert benchmark_peak.peak_precisions("cpu") == ("fp32", "bf16")


def summary_row(side, mode, median, precision="fp32", flops=2.0e9, times=None, runs=None):
    times = times or [median] * 5
    return {"row": {"side": side, "mode": mode, "precision": precision, "batch_size": 4, "run": 1},
            "stats": benchmark.step_statistics(times, 4), "times_s": times, "losses": [1.0] * 7,
            "first_step_s": 1.0, "peak_rss_bytes": 1, "peak_device_bytes": None,
            "execution": {"device": "cpu"}, "run_medians_s": runs}


def test_a_row_above_the_machine_peak_is_a_measurement_error_never_met():
    """A measured case: PyTorch eager at 108% of its own 142 GFLOP/s; against the machine's 200 it is 77%."""
    machine = {"fp32": {"gflop_per_s": 200.0, "n": 2048, "source": "tf"}}
    flops = {"4": {"used": 154e9}}
    results = [summary_row("torch", "eager", 1.0), summary_row("tf", "function", 0.5)]  # tf: 308 GFLOP/s
    rows = summary.summarize_rows(results, flops, machine, {"torch": {"fp32": {"gflop_per_s": 142.1}}})
    torch_row, tf_row = rows
    assert torch_row["peak_fraction"] == pytest.approx(0.77) and torch_row["peak_error"] is None
    assert torch_row["own_matmul_gflop_per_s"] == 142.1
    assert tf_row["peak_fraction"] == pytest.approx(1.54)
    assert "measurement error" in tf_row["peak_error"] and "154.0%" in tf_row["peak_error"]
    assert "TensorFlow tf.function fp32 batch 4" in tf_row["peak_error"]
    assert "fp32 200.0 GFLOP/s" in tf_row["peak_error"]
    for row in rows:
        row["reference"] = {"throughput_ratio": 1.0}
    found = summary.targets(rows, [])
    assert found["torch"]["peak_fraction_fp32"]["met"] is True
    assert found["tf"]["peak_fraction_fp32"]["met"] is None and "measurement error" in found["tf"][
        "peak_fraction_fp32"]["error"]


# ---- statistics for "faster" -----------------------------------------------------------------------------------

def test_bootstrap_interval_of_a_clear_and_of_an_overlapping_difference():
    rng = np.random.default_rng(1)
    fast, slow = 1.0 + 0.01 * rng.standard_normal(30), 1.2 + 0.01 * rng.standard_normal(30)
    clear = benchmark_stats.speed_ratio(fast, slow)
    assert clear["ratio"] == pytest.approx(np.median(slow) / np.median(fast))
    assert 1.15 < clear["low"] < clear["ratio"] < clear["high"] < 1.25 and clear["distinguishable"]
    assert clear["resamples"] == 2000 and clear["samples"] == [30, 30]
    assert benchmark_stats.speed_ratio(fast, slow) == clear  # fixed seed: the same interval again
    # 1.78 s against 1.88 s with a 0.3 s spread: the interval holds 1
    close = benchmark_stats.speed_ratio(1.78 + 0.3 * rng.standard_normal(10), 1.88 + 0.3 * rng.standard_normal(10))
    assert close["low"] < 1.0 < close["high"] and not close["distinguishable"]
    assert benchmark_stats.verdict(close).endswith("not distinguishable")
    single = benchmark_stats.speed_ratio([1.0], [2.0])
    assert single["ratio"] == 2.0 and single["low"] is None and not single["distinguishable"]


def test_comparisons_pair_the_fastest_modes_and_the_twins_over_repeats_when_several():
    rows = summary.summarize_rows(
        [summary_row("tf", "function", 0.10, times=[0.10, 0.11, 0.09, 0.10]),
         summary_row("tf", "xla", 0.08, times=[0.08, 0.081, 0.079, 0.08]),
         summary_row("tf", "eager", 0.50), summary_row("torch", "eager", 0.12, times=[0.12, 0.121, 0.119, 0.12]),
         summary_row("torch", "compile", 0.09, times=[0.09, 0.091, 0.089, 0.09])],
        {"4": {"used": 1e9}}, {})
    found = benchmark_stats.comparisons(rows)
    assert [(c["kind"], c["faster"]["mode"], c["slower"]["mode"]) for c in found] == [
        ("fastest", "xla", "compile"), ("twin", "function", "eager"), ("twin", "eager", "eager")]
    assert found[0]["ratio"] == pytest.approx(0.09 / 0.08) and found[0]["distinguishable"]
    assert found[0]["over"] == "timed steps"
    assert found[2]["faster"] == {"side": "torch", "mode": "eager"} and found[2]["ratio"] == pytest.approx(0.5 / 0.12)
    runs = [summary_row(side, mode, 0.1, runs=[0.1, 0.11, 0.12]) for side, mode in (("tf", "function"),
                                                                                     ("torch", "eager"))]
    for result in runs:
        result["run_medians_s"] = result.pop("run_medians_s")
    rows = summary.summarize_rows(runs, {"4": {"used": 1e9}}, {})
    for row, result in zip(rows, runs):
        row["run_medians_s"] = result["run_medians_s"]
    assert benchmark_stats.comparisons(rows)[0]["over"] == "processes"


# ---- presets ---------------------------------------------------------------------------------------------------

def test_presets_set_the_public_shapes_and_explicit_flags_win():
    presets = benchmark_presets.PRESETS
    assert presets["torchbench"].spec == {"image_size": (640, 960), "base_filters": 64, "batch_size": 1,
                                          "variant": "padded"}
    assert presets["nvidia-unet"].spec == {"image_size": 572, "base_filters": 64, "batch_size": 8,
                                           "variant": "original"}
    assert presets["nvidia-unet"].reference["img_per_s"] == {"tf32": 46.0, "amp": 119.0}
    assert presets["cpu"].spec["image_size"] == 128 and presets["cpu"].spec["batch_size"] == 4
    assert (presets["default"].warmup, presets["default"].steps) == (benchmark.WARMUP_STEPS, benchmark.TIMED_STEPS)
    args, spec, _ = compare.parse_args(["--task", "unet", "--benchmark", "--preset", "cpu", "--base-filters", "8",
                                        "--steps", "7"])
    assert (spec.image_size, spec.base_filters, spec.batch_size) == (128, 8, 4)
    assert (args.warmup, args.steps, args.bench_pipeline) == (1, 7, False)
    assert args.bench_modes == {"tf": ["function", "xla"], "torch": ["eager", "compile"]}
    args, spec, _ = compare.parse_args(["--task", "unet", "--benchmark", "--preset", "nvidia-unet"])
    assert (spec.variant, spec.image_size, spec.output_size) == ("original", 572, 388)
    assert "572x572" in benchmark_presets.describe(benchmark_presets.PRESETS["nvidia-unet"], spec)


def test_the_torchbench_preset_builds_its_640x960_spec():
    args, spec, _ = compare.parse_args(["--task", "unet", "--benchmark", "--preset", "torchbench"])
    assert spec.image_shape == (640, 960) and spec.base_filters == 64 and spec.batch_size == 1
    assert "640x960, not 640x959" in benchmark_presets.describe(benchmark_presets.PRESETS["torchbench"], spec)


@pytest.mark.parametrize("flags, message", [
    (["--task", "mlp", "--benchmark", "--preset", "cpu"], "--preset cpu sizes the U-Net"),
    (["--task", "unet", "--preset", "cpu"], "--preset cpu applies to --benchmark"),
    (["--task", "unet", "--benchmark", "--preset", "cpu", "--full-size"], "choose one"),
    (["--task", "mlp", "--benchmark", "--precisions", "tf32"], "--precisions tf32 needs --device cuda"),
    (["--task", "mlp", "--benchmark", "--tf32"], "--tf32 applies to a GPU"),
    (["--task", "mlp", "--benchmark", "--frameworks", "torch"], "--benchmark with one framework needs --golden"),
    (["--task", "mlp", "--benchmark", "--frameworks", "torch", "--golden", "nowhere.safetensors"],
     "nowhere.safetensors: no such golden file"),
    (["--task", "mlp", "--benchmark", "--frameworks", "torch", "--write-golden", "x.safetensors"],
     "--write-golden records both sides"),
    (["--task", "unet", "--benchmark", "--frameworks", "torch", "--golden", "tests/golden/unet-small.safetensors"],
     "written for base_filters=4, image_size=32"),
    (["--task", "mlp", "--benchmark", "--frameworks", "torch", "--golden", "tests/golden/unet-small.safetensors"],
     "written for --task unet, not mlp"),
    (["--task", "mlp", "--benchmark", "--frameworks", "keras-jax"], "an arm is timed only next to a side"),
    (["--task", "mlp", "--benchmark", "--frameworks", "tf,keras-jax", "--golden", "x.safetensors"],
     "leave keras-jax out of --frameworks"),
])
def test_bad_issue14_flags_get_one_line(flags, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(benchmark_golden.Path(compare.__file__).parent)
    assert compare.main([*flags, "--out", str(tmp_path / "never")]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "never").exists()


# ---- ready for a GPU: the rows planned for cuda --------------------------------------------------------------

def test_gpu_rows_fp32_tf32_bf16_fp16_and_the_reference_row():
    args = SimpleNamespace(device="cuda", precisions=None, tf32=False, bench_not_run=[])
    precisions = benchmark_run.bench_precisions(args, benchmark_presets.PRESETS["torchbench"])
    assert precisions == ["fp32", "tf32", "bf16", "fp16"] and args.bench_not_run == []
    rows = benchmark.plan_rows(["torch"], {"torch": ["eager", "channels_last", "compile"]}, precisions, [1], 1,
                               pipeline=False)
    steps = [(r.mode, r.precision) for r in rows if r.kind == "step"]
    assert steps == [(m, p) for p in ("fp32", "tf32") for m in ("eager", "channels_last", "compile")] + [
        ("eager", "bf16"), ("eager", "fp16")]
    assert [(r.mode, r.precision) for r in rows if r.reference] == [("eager", "fp32")]
    tf32_row = next(r for r in rows if r.precision == "tf32")
    assert tf32_row.execution.precision == "fp32" and tf32_row.tf32({}) and not rows[0].tf32({"tf32": True})
    assert not next(r for r in rows if r.precision == "fp32" and r.kind == "step").tf32({})
    assert len({r.name for r in rows}) == len(rows)
    # --tf32: the fp32 rows become tf32 rows, and the reference moves to the tf32 row
    args = SimpleNamespace(device="cuda", precisions="fp32,bf16", tf32=True, bench_not_run=[])
    precisions = benchmark_run.bench_precisions(args, benchmark_presets.PRESETS["default"])
    assert precisions == ["tf32", "bf16"]
    rows = benchmark.plan_rows(["torch"], {"torch": ["eager"]}, precisions, [8], 1, pipeline=False)
    assert [(r.precision, r.reference) for r in rows if r.kind == "step"] == [("tf32", True), ("bf16", False)]
    assert all(r.tf32({"tf32": True}) for r in rows if r.kind == "step")
    # on a CPU the cpu preset drops bf16 without bf16 units, and says what cannot run
    args = SimpleNamespace(device="cpu", precisions=None, tf32=False, bench_not_run=[])
    found = benchmark_run.bench_precisions(args, benchmark_presets.PRESETS["cpu"])
    assert "tf32" not in found and "fp16" not in found
    assert any("need --device cuda" in note for note in args.bench_not_run)


def test_nvidia_reference_line_on_a_gpu_run_only():
    rows = [{"side": "torch", "mode": "eager", "precision": p, "batch_size": 8, "stats": {"samples_per_s": v}}
            for p, v in (("tf32", 40.0), ("fp16", 100.0))]
    preset = benchmark_presets.PRESETS["nvidia-unet"]
    line = benchmark_presets.reference_line(preset, rows, "cuda")
    assert "TF32 46 img/s" in line and "AMP 119 img/s" in line and "PyTorch eager fp16 100.0" in line
    assert benchmark_presets.reference_line(preset, rows, "cpu") is None


# ---- the fairness manifest -------------------------------------------------------------------------------------

def fairness_result(side, kind, mode, precision, tf32):
    settings = {"tf32_matmul": tf32, "tf32_convolution": tf32, "intra_op_threads": 2, "inter_op_threads": 1,
                "compile": "not used", "variables": {"OMP_NUM_THREADS": None, "XLA_FLAGS": "--x"}}
    return {"row": {"side": side, "kind": kind, "mode": mode, "precision": precision},
            "fairness": {"harness_set": {"tf32_matmul": tf32}, "settings": settings}}


def test_manifest_records_each_side_and_checks_the_tf32_policy():
    results = [fairness_result(side, kind, mode, precision, precision == "tf32")
               for side, mode in (("tf", "function"), ("torch", "eager"))
               for kind, precision in (("parity", "fp32"), ("step", "fp32"), ("step", "tf32"))]
    found = manifest(results, threads=2, tf32=False, device="cuda")
    assert found["same_tf32_policy"] and "off in the fp32 rows" in found["tf32_policy"]
    torch = found["sides"]["torch"]
    assert torch["tf32_by_precision"] == {"fp32": False, "tf32": True}
    assert torch["harness_set"]["intra_op_threads"] == 2 and torch["modes"]["eager"] == {"compile": "not used"}
    assert torch["variables"] == {"OMP_NUM_THREADS": None, "XLA_FLAGS": "--x"}
    results[-1]["fairness"]["settings"]["tf32_matmul"] = False  # torch's tf32 row without TF32
    results[-2]["fairness"]["settings"]["tf32_matmul"] = True  # and its fp32 row with it
    assert not manifest(results, 2, False, "cuda")["same_tf32_policy"]


@pytest.mark.parametrize("side", ["tf", "torch"])
def test_each_side_reports_and_sets_its_settings(side):
    from conftest import side_module
    from shared.execution import Execution

    module = side_module(side, "benchmark")
    execution = Execution("eager" if side == "torch" else "function")
    assert module.configure_fairness(execution, False) == {"tf32_matmul": False, "tf32_convolution": False}
    settings = module.fairness_settings(execution)
    assert settings["tf32_matmul"] is False and isinstance(settings["intra_op_threads"], int)
    assert "OMP_NUM_THREADS" in settings["variables"] and "NVIDIA_TF32_OVERRIDE" in settings["variables"]
    module.configure_fairness(execution, True)
    assert module.fairness_settings(execution)["tf32_matmul"] is True
    module.configure_fairness(execution, False)


# ---- golden files ----------------------------------------------------------------------------------------------

def make_golden(tmp_path, output=None):
    spec = make_spec("mlp")
    images, targets = np.zeros((2, 28, 28, 1), np.float32), np.array([1, 2])
    output = np.full((2, 10), -2.3, np.float32) if output is None else output
    rows = {side: {"first_step_loss": 2.3, "parameters": 10, "weights_sha256": "abc",
                   "execution": {"device": "cpu"}, "build": {"tensorflow": "2.x", "torch": "2.y", "pid": 1}}
            for side in ("tf", "torch")}
    path = benchmark_golden.write_golden(tmp_path / "g.safetensors", spec, images, targets,
                                         {"tf": output, "torch": output}, rows, {"max_abs_diff": 0.0},
                                         {"parity": 1e-5, "loss": 1e-6}, "log-probabilities")
    return spec, path, rows["torch"]


def test_golden_round_trip_and_the_check_of_one_ulp_and_of_1e_3(tmp_path):
    spec, path, row = make_golden(tmp_path)
    golden = benchmark_golden.read_golden(path)
    benchmark_golden.check_spec(golden, spec)
    assert json.loads(benchmark_golden.sidecar(path).read_text())["first_step_loss"] == {"tf": 2.3, "torch": 2.3}
    assert "pid" not in golden.metadata["versions"]["tf"]
    probe = golden.output("tf").copy()
    probe[0, 3] = np.nextafter(probe[0, 3], np.float32(0))  # one ulp
    check = benchmark_golden.check_side(golden, "torch", row, probe, 1e-5, 1e-6)
    assert check["passed"] and 0 < check["output_diff"]["tf"] < 1e-6
    probe[0, 3] += 1e-3
    check = benchmark_golden.check_side(golden, "torch", row, probe, 1e-5, 1e-6)
    assert not check["passed"] and len(check["problems"]) == 2
    assert "max |diff| 0.001" in check["problems"][0] and "tolerance 1e-05" in check["problems"][0]
    bad = benchmark_golden.check_side(golden, "torch", {**row, "first_step_loss": 2.31, "weights_sha256": "x"},
                                      golden.output("tf"), 1e-5, 1e-6)
    assert [p.split(":")[0] for p in bad["problems"]] == ["torch", "torch first-step loss vs the golden tf loss",
                                                          "torch first-step loss vs the golden torch loss"]
    with pytest.raises(UserError, match="written for seed=0; this run has seed=3"):
        benchmark_golden.check_spec(golden, spec.replace(seed=3))
    (tmp_path / "junk.safetensors").write_bytes(b"not a file")
    with pytest.raises(UserError, match="not a twinnets golden file"):
        benchmark_golden.read_golden(tmp_path / "junk.safetensors")


def test_a_golden_mismatch_of_1e_3_stops_before_any_timing(tmp_path, monkeypatch, capsys):
    """The orchestrator with a fake PyTorch worker that returns the golden output; the file's outputs moved by
    1e-3: parity fails against the file, exit 1, and no step row is launched."""
    from harness.benchmark.rows import weights_digest
    from harness.registry import REGISTRY

    spec = make_spec("mlp")
    golden_output = np.full((8, 10), -2.3, np.float32)
    digest = weights_digest(REGISTRY["mlp"].initial_weights(spec))
    rows = {side: {"first_step_loss": 2.3, "parameters": 199210, "weights_sha256": digest,
                   "execution": {"device": "cpu"}, "build": {}} for side in ("tf", "torch")}
    path = benchmark_golden.write_golden(tmp_path / "g.safetensors", spec, np.zeros((8, 28, 28, 1), np.float32),
                                         np.zeros(8, np.int64), {"tf": golden_output + 1e-3,
                                                                 "torch": golden_output + 1e-3},
                                         rows, {"max_abs_diff": 0.0}, {}, "log-probabilities")
    launched = []

    def fake_launch(order, nproc=1, threads=1):
        side, job = order.side, json.loads(Path(order.job).read_text())
        row = Row(**job["row"])
        launched.append((side, row.kind))
        assert job["settings"]["golden"] == str(path)
        out = tmp_path / "out" / "rows"
        np.save(out / f"{row.name}.probe.npy", golden_output)
        (out / f"{row.name}.json").write_text(json.dumps({**rows["torch"], "row": job["row"], "row_name": row.name,
                                                          "flops": {}}))

    monkeypatch.setattr(benchmark_run, "launch_worker", fake_launch)
    status = compare.main(["--task", "mlp", "--benchmark", "--frameworks", "torch", "--golden", str(path),
                           "--out", str(tmp_path / "out"), "--steps", "2"])
    printed = capsys.readouterr()
    assert status == 1 and launched == [("torch", "parity")]
    assert "parity failed, so no timing is reported" in printed.err and "golden tf output" in printed.err
    assert "median" not in printed.out and "against the golden file" in printed.out
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["parity"]["passed"] is False and results["rows"] == []
    assert results["parity"]["sides"]["torch"]["output_diff"]["torch"] == pytest.approx(1e-3, rel=1e-3)


def test_the_cpu_other_processes_take_is_measured_and_named():
    """A spinning process that is not the benchmark's own (not yet waited for) shows as other processes' share of
    the machine; an idle second does not."""
    idle_before = cpu_load.cpu_snapshot()
    time.sleep(1.0)
    idle = cpu_load.other_share(idle_before, cpu_load.cpu_snapshot())
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)  # started
        before = cpu_load.cpu_snapshot()
        time.sleep(1.5)
        busy = cpu_load.other_share(before, cpu_load.cpu_snapshot())
    finally:
        spinner.kill()
        spinner.wait()
    cores = os.cpu_count() or 1
    assert busy > idle + 0.5 / cores, (busy, idle)  # one of the cores spun for the whole second and a half


def test_a_busy_row_makes_its_comparisons_untrusted_and_the_header_says_so():
    rows = [{"side": side, "mode": mode, "precision": "fp32", "batch_size": 8, "stats": {"median_s": median},
             "times_s": [median] * 5, "run_medians_s": [median], "other_cpu_share": share}
            for side, mode, median, share in (("tf", "function", 0.2, 0.02), ("torch", "eager", 0.1, 0.4))]
    found = benchmark_stats.comparisons(rows)
    assert found and all(comparison["trusted"] is False for comparison in found)
    assert "(not trusted: other processes took the CPU)" in report.comparison_line(found[0])
    rows[1]["other_cpu_share"] = 0.05
    assert all(comparison["trusted"] for comparison in benchmark_stats.comparisons(rows))
    machine = cpu_load.machine_load([{"row_name": "a", "other_cpu_share": 0.02},
                                 {"row_name": "b", "other_cpu_share": 0.45}])
    assert machine["busy"] and machine["busy_rows"] == ["b"] and machine["largest_other_share"] == 0.45
    assert cpu_load.busy_line(machine).startswith(
        "machine busy: other processes took up to 45% of the CPU during 1 row")
    assert cpu_load.busy_line(cpu_load.machine_load([{"row_name": "a", "other_cpu_share": 0.01}])) is None
    assert "% of peak is too high" not in cpu_load.busy_line(machine)
    busy_peak = cpu_load.machine_load([{"row_name": cpu_load.PEAK_ROW, "other_cpu_share": 0.5}])
    assert "the machine peak was measured while busy" in cpu_load.busy_line(busy_peak)


# ---- the Keras arms --------------------------------------------------------------------------------------------

def test_arm_ratios_are_step_time_ratios_with_bootstrap_intervals():
    """The API's cost (an arm over its engine's native side) and the engine's cost (an arm over Keras on TensorFlow),
    as ratios of median step times, numerator over denominator, each with its bootstrap interval."""
    rng = np.random.default_rng(3)
    medians = {("tf", "function"): 0.10, ("torch", "eager"): 0.08, ("keras-tf", "function"): 0.12,
               ("keras-tf", "xla"): 0.07, ("keras-jax", "jit"): 0.09, ("keras-torch", "eager"): 0.16,
               ("keras-torch", "compile"): 0.50}
    results = [summary_row(side, mode, m, times=list(m * (1 + 0.01 * rng.standard_normal(20))))
               for (side, mode), m in medians.items()]
    rows = summary.summarize_rows(results, {"4": {"used": 1e9}}, {})
    found = arms.arm_ratios(rows)
    assert [(r["kind"], r["numerator"], r["denominator"]) for r in found] == [
        ("api", {"side": "keras-torch", "mode": "eager"}, {"side": "torch", "mode": "eager"}),
        ("api", {"side": "keras-tf", "mode": "function"}, {"side": "tf", "mode": "function"}),
        ("engine", {"side": "keras-jax", "mode": "jit"}, {"side": "keras-tf", "mode": "function"}),
        ("engine", {"side": "keras-torch", "mode": "eager"}, {"side": "keras-tf", "mode": "function"})]
    by_row = {(r["side"], r["mode"]): r for r in rows}
    for ratio, expected in zip(found, (2.0, 1.2, 0.75, 4 / 3)):
        top, bottom = (by_row[(ratio[key]["side"], ratio[key]["mode"])] for key in ("numerator", "denominator"))
        assert ratio["ratio"] == pytest.approx(np.median(top["times_s"]) / np.median(bottom["times_s"]))
        assert ratio["ratio"] == pytest.approx(expected, rel=0.02)
        assert 0 < ratio["low"] < ratio["ratio"] < ratio["high"] < np.inf and ratio["distinguishable"]
        assert ratio["resamples"] == 2000 and ratio["samples"] == [20, 20] and ratio["over"] == "timed steps"
    assert arms.ratio_line(found[0]).startswith(
        "the Keras API's cost on PyTorch (fp32, batch 4): Keras on PyTorch eager (Keras' default) / PyTorch eager "
        "step time 2.00x (95% interval ")
    assert [r["kind"] for r in arms.arm_ratios([r for r in rows if r["side"].startswith("keras-")])] == ["engine"] * 2
    assert arms.arm_ratios([r for r in rows if r["side"] != "keras-tf"]) == found[:1]


def fake_surface(side: str) -> SimpleNamespace:
    """What run_row asks of a side, without a framework."""
    side_benchmark = SimpleNamespace(configure_fairness=lambda execution, tf32: {"tf32_matmul": tf32},
                                     peak_device_memory=lambda execution: None, build_info=lambda: {"keras": "3"},
                                     fairness_settings=lambda execution: {"variables": {}})
    return SimpleNamespace(side=side, runtime=SimpleNamespace(configure_execution=lambda execution: execution),
                           module=lambda name: side_benchmark)


def test_a_program_an_engine_cannot_run_is_a_one_line_row_and_the_others_go_on(monkeypatch, tmp_path):
    """An arm's row that raises (torch.compile refusing the program) is its error's first line; a worker that dies
    is its exit status; a native side's error still stops the benchmark."""
    def refuse(*args):
        raise RuntimeError("torch.compile failed: Dynamo could not trace\n  File x.py, line 1\nmore")

    monkeypatch.setitem(benchmark.ROW_KINDS, "step", refuse)
    spec, row = make_spec("mlp"), Row("keras-torch", "step", "compile", "fp32", 4)
    result, probe = benchmark.run_row(fake_surface("keras-torch"), spec, row, {"device": "cpu"}, None)
    assert probe is None and result["failure"] == "RuntimeError: torch.compile failed: Dynamo could not trace"
    assert result["fairness"]["harness_set"] == {"tf32_matmul": False}  # the rest of the row's record is kept
    failed = arms.failed_rows([{**result, "row_name": row.name}])
    line = arms.failure_line(failed[0])
    assert line == ("Keras on PyTorch torch.compile (jit_compile) fp32 batch 4 (step row) could not run: "
                    "RuntimeError: torch.compile failed: Dynamo could not trace")
    with pytest.raises(RuntimeError):
        benchmark.run_row(fake_surface("torch"), spec, Row("torch", "step", "compile", "fp32", 4), {"device": "cpu"},
                          None)

    def crash(order, nproc=1, threads=1):
        raise SideFailed(f"the {order.side} side failed with exit status -11 (its traceback is above)")

    monkeypatch.setattr(benchmark_run, "launch_worker", crash)
    run = benchmark_run.RowRunner(spec, None, tmp_path, {}, 1, 2, 1)
    crashed = run(1, row)
    assert "exit status -11" in crashed["failure"] and run.of_kind("step") == []
    assert len(arms.failure_line(arms.failed_rows([crashed])[0]).splitlines()) == 1
    with pytest.raises(SideFailed):
        run(2, Row("torch", "step", "eager", "fp32", 4))


def arm_parity_row(digest: str = "a") -> dict:
    return {"parameters": 10, "weights_sha256": digest, "flops": {}, "first_step_loss": 2.3}


def test_each_arm_is_gated_against_the_tf_side_and_an_arm_without_parity_is_left_out():
    probe = np.zeros((2, 10), np.float32)
    rows = {side: arm_parity_row() for side in ("tf", "torch", "keras-jax", "keras-torch")}
    probes = {"tf": probe, "torch": probe + 2e-7, "keras-jax": probe + 1e-7, "keras-torch": probe + 1e-3}
    gate = arms.gate(rows, probes, 1e-5, {})
    assert gate["reference"] == "tf" and gate["native"]["passed"] and gate["arms"]["keras-jax"]["passed"]
    assert not gate["passed"] and gate["problems"] == [
        "keras-torch: forward output differs from tf's by 0.001 (tolerance 1e-05)"]
    assert gate["max_abs_diff"] == pytest.approx(2e-7)  # tf against torch, as without arms
    rows["keras-torch"] = arm_parity_row("b")
    probes["keras-torch"] = probe
    assert arms.gate(rows, probes, 1e-5, {})["problems"] == ["keras-torch: its canonical weights differ from tf's "
                                                             "(sha256)"]
    # keras-torch could not build the model: left out of the timing, said in one line; the others are gated
    del rows["keras-torch"]
    gate = arms.gate(rows, probes, 1e-5, {"keras-torch": "KeyError: 'parameter name can't contain \".\"'"})
    assert gate["passed"] and gate["not_run"] == {"keras-torch": "KeyError: 'parameter name can't contain \".\"'"}
    assert arms.gate_lines(gate)[-1].startswith("  Keras on PyTorch: not timed, its parity row failed: KeyError")
    assert any("identical." in line for line in arms.equal_work_lines(gate))
    alone = arms.gate({"torch": rows["torch"], "keras-jax": rows["keras-jax"]}, probes, 1e-5, {})
    assert alone["passed"] and alone["reference"] == "torch" and alone["native"] is None
    assert alone["max_abs_diff"] == pytest.approx(1e-7)
    lonely = arms.gate({"tf": rows["tf"]}, probes, 1e-5, {"keras-jax": "ImportError: no jax"})
    assert not lonely["passed"] and "keras-jax could not run its parity row: ImportError: no jax" in lonely["problems"]


def test_the_arms_take_their_modes_from_the_flags_and_the_cpu_preset():
    args, _, sides = compare.parse_args(["--task", "unet", "--benchmark", "--frameworks", "all", "--preset", "cpu"])
    assert sides == ["tf", "torch", "keras-tf", "keras-jax", "keras-torch"]
    assert args.bench_modes == {"tf": ["function", "xla"], "torch": ["eager", "compile"],
                                "keras-tf": ["function", "xla"], "keras-jax": ["jit"],
                                "keras-torch": ["eager"]}
    args, _, _ = compare.parse_args(["--task", "mlp", "--benchmark", "--frameworks", "torch,keras-torch",
                                     "--modes", "eager,keras-torch:compile"])
    assert args.bench_modes == {"torch": ["eager"], "keras-torch": ["eager", "compile"]}
    args, _, _ = compare.parse_args(["--task", "mlp", "--benchmark"])
    assert args.bench_modes == {"tf": ["function", "eager", "xla"], "torch": ["eager", "channels_last", "compile"]}
    preset = benchmark_presets.PRESETS["cpu"]
    spec = make_spec("unet", image_size=128)
    assert "jax.jit on JAX" in benchmark_presets.describe(preset, spec, arms=True)
    assert "Keras" not in benchmark_presets.describe(preset, spec)
