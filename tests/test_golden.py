"""The golden files of tests/golden/ (written by `compare.py --benchmark --write-golden`, see its README): both sides
still compute what they computed when the files were written, within the task's tolerance, so a framework upgrade
that changes numerics fails here; and `--frameworks torch --golden` runs with TensorFlow, Keras and kaggle absent."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import COMPARE, ROOT, USER_DIR
from harness.benchmark import golden as benchmark_golden
from harness.benchmark import rows as benchmark
from harness.benchmark.rows import REFERENCE_MODE, Row
from harness.jobs import spec_of
from harness.registry import REGISTRY, tolerance
from shared.execution import Execution
from shared.tasks import make_spec

GOLDEN = ROOT / "tests" / "golden"
FILES = {"mlp": GOLDEN / "mlp-small.safetensors", "unet": GOLDEN / "unet-small.safetensors"}


@pytest.mark.parametrize("task", sorted(FILES))
def test_both_sides_match_the_golden_file(task, side):
    """The benchmark's own parity row, in this process, on the file's batch: output and first-step loss."""
    golden = benchmark_golden.read_golden(FILES[task])
    spec = spec_of({"task": task, "spec": golden.metadata["spec"]})
    benchmark_golden.check_spec(golden, spec)
    entry = REGISTRY[task]
    surface = entry.surface(side, spec)
    execution = surface.runtime.configure_execution(Execution(REFERENCE_MODE[side]))
    row = Row(side, "parity", REFERENCE_MODE[side], batch_size=golden.metadata["batch_size"])
    result, probe = benchmark.parity_row(surface, entry, spec, row, {"golden": str(FILES[task]), "batch_sizes": []},
                                         None, execution)
    result["execution"] = execution.to_dict()
    check = benchmark_golden.check_side(golden, side, result, probe, entry.tolerance, tolerance(task, "loss"))
    assert check["passed"], check["problems"]
    assert max(check["output_diff"].values()) <= entry.tolerance
    assert result["first_step_loss"] == pytest.approx(golden.metadata["first_step_loss"][side], abs=1e-5)


def test_the_golden_files_are_small_and_say_how_they_were_made():
    for path in FILES.values():
        assert path.stat().st_size < 300_000 and benchmark_golden.sidecar(path).is_file()
        meta = json.loads(benchmark_golden.sidecar(path).read_text())
        assert meta["weights_sha256"]["tf"] == meta["weights_sha256"]["torch"]
        assert meta["max_abs_diff"] <= meta["tolerances"]["parity"]
    assert "--write-golden tests/golden/unet-small.safetensors" in (GOLDEN / "README.md").read_text()


# Importing TensorFlow, Keras or kaggle fails in every process of the run, as on a machine without them.
ABSENT = "import sys\nfor name in ('tensorflow', 'keras', 'kaggle'):\n    sys.modules[name] = None\n"


def test_pytorch_alone_checked_against_a_golden_file_moved_by_one_ulp(tmp_path):
    """`--frameworks torch --golden` with TensorFlow unimportable: the parity check against the file (one output
    moved by one ulp: still within tolerance) comes before the timing, and the report states the chain."""
    from safetensors import safe_open
    from safetensors.numpy import save_file

    with safe_open(str(FILES["mlp"]), framework="numpy") as opened:
        metadata, arrays = opened.metadata(), {name: opened.get_tensor(name) for name in opened.keys()}
    arrays["output.tf"][0, 0] = np.nextafter(arrays["output.tf"][0, 0], np.float32(0))
    edited = tmp_path / "mlp-ulp.safetensors"
    save_file(arrays, str(edited), metadata=metadata)
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "sitecustomize.py").write_text(ABSENT)
    out = tmp_path / "bench"
    env = {**os.environ, "PYTHONPATH": str(shim), "TF_CPP_MIN_LOG_LEVEL": "3", "TWINNETS_CACHE": str(tmp_path / "c")}
    completed = subprocess.run(
        [sys.executable, COMPARE, "--task", "mlp", "--benchmark", "--frameworks", "torch", "--golden",
         str(edited), "--modes", "torch:eager", "--precisions", "fp32", "--warmup", "1", "--steps", "3",
         "--batch-sizes", "32", "--threads", "1", "--out", str(out)],
        cwd=USER_DIR, env=env, capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stdout[-2000:] + completed.stderr[-3000:]
    printed = completed.stdout
    assert "parity: against the golden file" in printed and "on PyTorch only" in printed
    assert printed.index("parity passed against the golden file") < printed.index("median step")
    results = json.loads((out / "results.json").read_text())
    check = results["parity"]["sides"]["torch"]
    assert results["parity"]["passed"] and check["passed"]
    assert 0 < check["output_diff"]["tf"] < 1e-6 and check["output_diff"]["torch"] <= 1e-6
    assert results["config"]["frameworks"] == ["torch"] and [r["side"] for r in results["rows"]] == ["torch"]
    assert set(results["matmul_peak"]) == {"torch", "numpy"} and results["machine_peak"]["fp32"]["gflop_per_s"] > 0
    assert results["comparisons"] == [] and set(results["fairness"]["sides"]) == {"torch"}
    report = (out / "report.md").read_text()
    assert "TensorFlow-CPU = PyTorch-CPU (golden file" in report and "PyTorch-CPU (this run) = " in report
    assert make_spec("mlp").batch_size != 32 and results["rows"][0]["batch_size"] == 32
