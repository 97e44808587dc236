"""--pair --benchmark (harness/pair/benchmark.py, tf_impl/pair_benchmark.py, torch_impl/pair_benchmark.py): both
models' training step and forward pass timed behind the parity gate. The small pairs of tests/test_pair.py, checked
and timed in this process (in_process=True, a few steps); the last test runs the command, each side timed in a
fresh worker process."""
from __future__ import annotations

import json

import pytest
from test_pair import CONV_K, CONV_T, IMAGE, files, keras_model, torch_model
from test_pair_cli import run_cli, user_folder

import compare
from harness.pair import benchmark as pair_benchmark
from harness.pair import check_pair
from shared.errors import UserError

KERAS = keras_model(CONV_K, "y = layers.Flatten()(y)", 'y = layers.Dense(3, name="fc")(y)')
TORCH = torch_model({**CONV_T, "flat": "nn.Flatten()", "fc": "nn.Linear(256, 3)"})
# BatchNorm's epsilon: Keras 1e-3, PyTorch 1e-5 (tests/test_pair.py's trap): the layer outputs differ.
KERAS_BN = keras_model(CONV_K, 'y = layers.BatchNormalization(momentum=0.9, name="bn")(y)')
TORCH_BN = torch_model({**CONV_T, "bn": "nn.BatchNorm2d(4)"})
TIMING = {"benchmark": True, "warmup": 1, "benchmark_steps": 4, "steps": 2, "in_process": True}


def no_timing(*args, **kwargs):
    raise AssertionError("a side was timed behind a failed parity gate")


def test_the_gate_stops_a_mismatched_pair_before_any_timing(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(pair_benchmark, "bench_side", no_timing)
    keras, torch = files(tmp_path, KERAS_BN, TORCH_BN)
    status = compare.main(["--pair", keras, torch, "--input-shape", ",".join(map(str, IMAGE)), "--benchmark",
                           "--inference", "--in-process", "--out", str(tmp_path / "run")])
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("compare.py")]
    assert status == 1
    assert len(err) == 1 and err[0].startswith("compare.py: error: parity failed, so no timing is reported: the "
                                               "first difference is Keras layer 'bn' and PyTorch module 'bn'"), err
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    found = results["pair"]["benchmark"]
    assert found == {"gate": found["gate"], "timed": False}  # no rows, ratios or manifest
    assert found["gate"]["passed"] is False and "'bn'" in found["gate"]["reason"]
    assert not (tmp_path / "run" / "benchmark").exists()
    assert "No timing: the parity gate failed" in (tmp_path / "run" / "report.md").read_text()


def test_an_output_that_differs_after_the_last_layer_is_stopped_too(tmp_path, monkeypatch):
    """A functional op after the last module is in no layer's record: the gate reads the output's loss."""
    monkeypatch.setattr(pair_benchmark, "bench_side", no_timing)
    torch = torch_model({**CONV_T, "flat": "nn.Flatten()", "fc": "nn.Linear(256, 3)"},
                        forward="self.fc(self.flat(self.conv(x))).tanh()")
    results = check_pair(*files(tmp_path, KERAS, torch), IMAGE, out=tmp_path / "run", **TIMING)
    gate = results["pair"]["benchmark"]["gate"]
    assert gate["passed"] is False and gate["output"]["passed"] is False, gate
    assert "outputs differ" in gate["reason"]


def test_an_equal_pair_gets_both_sides_step_times_intervals_and_a_ratio(tmp_path):
    results = check_pair(*files(tmp_path, KERAS, TORCH), IMAGE, out=tmp_path / "run", inference=True, threads=1,
                         **TIMING)
    assert results["pair"]["verdict"] == "equal", results["pair"]["sentence"]
    found = results["pair"]["benchmark"]
    assert found["gate"]["passed"] and found["gate"]["output"]["passed"] and found["timed"]
    rows = {(row["what"], row["side"]): row for row in found["rows"]}
    assert set(rows) == {(what, side) for what in ("train", "forward") for side in ("tf", "torch")}
    for row in rows.values():
        assert len(row["times_s"]) == 4 and row["over"] == "timed steps"
        assert row["median_low_s"] <= row["stats"]["median_s"] <= row["median_high_s"]
        assert row["first_step_s"] > 0
    assert [c["what"] for c in found["comparisons"]] == ["train", "forward"]
    for comparison in found["comparisons"]:
        assert comparison["ratio"] >= 1 and comparison["low"] <= comparison["ratio"] <= comparison["high"]
        assert {comparison["faster"], comparison["slower"]} == {"tf", "torch"}
    assert found["first_loss"]["rel"] < 1e-5  # the same step from the same weights on the same input
    for side in ("tf", "torch"):
        manifest = found["fairness"]["sides"][side]
        assert manifest["harness_set"]["intra_op_threads"] == 1 and "intra_op_threads" in manifest["settings"]
    assert found["environment"]["cpu_flags"] and found["environment"]["threads"] == 1
    assert found["machine_load"]["busy_share_limit"] == 0.10
    assert found["method"]["process"].startswith("one shared process")
    report = (tmp_path / "run" / "report.md").read_text()
    assert "## Benchmark" in report and "parity gate passed" in report and "Fairness manifest" in report
    assert json.loads((tmp_path / "run" / "results.json").read_text())["pair"]["benchmark"]["timed"] is True


def test_a_difference_after_the_forward_pass_is_timed_with_a_note(tmp_path):
    """BatchNorm's momentum shows in the running mean after one step only: the forward pass is equal, the gate
    passes, and says what the check found."""
    keras = keras_model(CONV_K, 'y = layers.BatchNormalization(epsilon=1e-5, name="bn")(y)')
    results = check_pair(*files(tmp_path, keras, TORCH_BN), IMAGE, out=tmp_path / "run",
                         **{**TIMING, "benchmark_steps": 2})
    found = results["pair"]["benchmark"]
    assert results["pair"]["verdict"] == "different" and found["timed"]
    assert "step stage" in found["gate"]["note"]
    assert [row["what"] for row in found["rows"]] == ["train", "train"]


def test_the_timing_flags_need_benchmark_and_the_benchmarks_own_are_refused(tmp_path, capsys):
    keras, torch = files(tmp_path, KERAS, TORCH)
    with pytest.raises(UserError, match="--inference times the pair: give --benchmark too"):
        check_pair(keras, torch, IMAGE, inference=True, out=tmp_path / "run")
    for flags, words in ((["--warmup", "2"], "--warmup times the pair"),
                         (["--benchmark", "--modes", "eager"], "leave out --modes"),
                         (["--benchmark", "--repeat", "0"], "--repeat must lie in [1, 10000]")):
        status = compare.main(["--pair", keras, torch, "--input-shape", "2,3,8,8", "--out", str(tmp_path / "run"),
                               *flags])
        assert status == 2 and words in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_the_command_times_each_side_in_a_fresh_process_with_the_same_threads():
    folder = user_folder()
    completed = run_cli("--pair", f"{folder.name}/k.py:build", f"{folder.name}/t.py:Net", "--input-shape", "2,3,8,8",
                        "--benchmark", "--inference", "--steps", "3", "--warmup", "1", "--threads", "1", "--out",
                        f"{folder.name}/run")
    assert completed.returncode == 0, completed.stderr[-3000:]
    found = json.loads((folder / "run" / "results.json").read_text())["pair"]["benchmark"]
    assert found["timed"] and found["method"]["process"] == "a fresh worker process per side"
    for side in ("tf", "torch"):
        assert found["fairness"]["sides"][side]["settings"]["intra_op_threads"] == 1
        assert found["fairness"]["sides"][side]["settings"]["inter_op_threads"] == 1
        assert (folder / "run" / "benchmark" / f"{side}-r1.json").is_file()
    assert len(found["rows"]) == 4 and len(found["comparisons"]) == 2
    assert "parity gate passed" in completed.stdout and "throughput" in completed.stdout
