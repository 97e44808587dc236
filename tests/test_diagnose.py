"""--diagnose K (harness/diagnose/run.py and each side's diagnose.py): the first K training steps of both sides recorded
layer by layer and compared. Correct twins stay within the tolerances; twins broken on purpose (here, by
monkeypatch only) are caught at the step, layer and quantity where the break first shows."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import COMPARE, USER_DIR, side_module
from harness.diagnose import differences, report
from harness.diagnose.steps import diagnose_side
from harness.registry import REGISTRY, TOLERANCES
from shared.data.synthetic_cars import generate_synthetic_carvana
from shared.tasks import make_spec

# Small widths and few images keep each test to seconds; the real training data of each task.
SMALL = {"mlp": {"layer_sizes": (784, 32, 32, 10), "batch_size": 32, "sample_size": 256},
         "cnn": {"channels": (4, 8), "hidden": 32, "batch_size": 32, "sample_size": 256},
         "unet": {"depth": 2, "image_size": 16, "base_filters": 2, "batch_size": 2, "validation_size": 0.0}}
STEPS = 3
SIDES = ("torch", "tf")  # torch first: see conftest.py
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module", autouse=True)
def _threads_restored():
    """diagnose_side sets the process's thread count (one thread here: the nets are tiny); later tests get theirs
    back."""
    import torch

    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def carvana(tmp_path_factory) -> Path:
    """Two synthetic cars of 16 photos each, all of them to train on."""
    return generate_synthetic_carvana(tmp_path_factory.mktemp("diagnose") / "carvana", n_cars=2, n_test_cars=0,
                                      size=(192, 128))


def diagnosed(task: str, out: Path, carvana: Path | None = None, steps: int = STEPS) -> dict:
    """Both sides' first steps of the small task in this process, compared as run_diagnose compares them."""
    spec = make_spec(task, **SMALL[task])
    data = REGISTRY[task].prepare_data(spec, carvana if task == "unet" else None, False)
    job = {"task": task, "spec": spec.to_dict(), "threads": 1, "out": str(out), "data": data, "steps": steps,
           "device": "cpu"}
    sides = {side: diagnose_side(side, job) for side in SIDES}
    tolerances = differences.tolerances_of(task)
    records = differences.compare_sides(out, steps, tolerances)
    return {"records": records, "first": differences.first_divergence(records, tolerances), "sides": sides,
            "spec": spec}


def where(found: dict | None) -> tuple | None:
    return None if found is None else (found["step"], found["layer"], found["quantity"])


def beyond(records: list[dict], **fields) -> list[dict]:
    """The records beyond their tolerance among those with the given fields."""
    return [r for r in records if r["exceeds"] and all(r[key] == value for key, value in fields.items())]


# ---- correct twins ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("task", ["mlp", "cnn", "unet"])
def test_correct_twins_agree_for_k_steps(task, tmp_path, carvana):
    found = diagnosed(task, tmp_path, carvana)
    assert found["first"] is None, f"{task}: {report.verdict(found['first'], STEPS)}"
    records, spec = found["records"], found["spec"]
    layout = REGISTRY[task].layout(spec)
    layers = list(dict.fromkeys(name.rsplit(".", 1)[0] for name in layout))
    for step in range(STEPS):
        at = [r for r in records if r["step"] == step]
        # The layer outputs in data-flow order, which for these nets is the canonical layout's order.
        assert [r["layer"] for r in at if r["quantity"] == "output"] == layers
        assert {r["name"] for r in at if r["quantity"] == "weight"} == set(layout)
        trainable = {n for n, p in layout.items() if p.kind not in ("bn_mean", "bn_var")}
        assert {r["name"] for r in at if r["quantity"] == "gradient"} == trainable
        assert {r["name"] for r in at if r["quantity"] == "optimizer_state"} == {f"{n}.momentum" for n in trainable}
    assert found["sides"]["tf"]["losses"] == pytest.approx(found["sides"]["torch"]["losses"], rel=1e-5)
    assert found["sides"]["torch"]["batch_sizes"] == [spec.batch_size] * STEPS
    # Every tensor has its float64 twin, and the float64 twins agree far tighter than float32 ones can.
    assert all(r["float64_rel"] is not None for r in records)
    assert max(r["float64_rel"] for r in records) <= TOLERANCES[task]["float64"]
    assert found["sides"]["tf"]["losses_float64"] == pytest.approx(found["sides"]["torch"]["losses_float64"],
                                                                   rel=1e-12)


def test_gradients_are_those_the_update_applied(tmp_path):
    """Step 0 from the canonical weights: both sides' momentum buffers start at the gradient (Keras' velocity is
    converted to PyTorch's convention), and each weight moved by exactly -lr * gradient."""
    spec = make_spec("mlp", **SMALL["mlp"])
    diagnosed("mlp", tmp_path, steps=1)
    initial = REGISTRY["mlp"].initial_weights(spec)
    for side in SIDES:
        with np.load(tmp_path / side / "step0.npz") as step:
            for name in initial:
                gradient = step[f"gradient:{name}"]
                np.testing.assert_allclose(step[f"optimizer_state:{name}.momentum"], gradient, rtol=1e-5, atol=1e-9)
                np.testing.assert_allclose(step[f"weight:{name}"], initial[name] - spec.lr * gradient, atol=1e-7)


def test_layer_outputs_agree_and_leave_the_model_as_it_was(carvana):
    """The standalone layer_outputs: the same names in data-flow order and NHWC shapes on both sides, within the
    forward tolerance, and BatchNorm's running statistics (which a training-mode pass moves) put back."""
    spec = make_spec("unet", **SMALL["unet"])
    initial = REGISTRY["unet"].initial_weights(spec)
    images = np.random.default_rng(0).random((2, spec.image_size, spec.image_size, 3), dtype=np.float32)
    outputs = {}
    for side in SIDES:
        task = REGISTRY["unet"].surface(side, spec).task
        model = task.build(spec)
        task.load_weights(model, initial)
        outputs[side] = side_module(side, "diagnose").layer_outputs(model, images)
        exported = task.export_weights(model)
        assert all(np.array_equal(exported[name], initial[name]) for name in initial), f"{side}: model changed"
    assert list(outputs["tf"]) == list(outputs["torch"])
    assert list(outputs["torch"])[:2] == ["enc1.conv1", "enc1.bn1"] and list(outputs["torch"])[-1] == "head"
    assert outputs["torch"]["head"].shape == (2, spec.image_size, spec.image_size, 1)
    for name, value in outputs["torch"].items():
        gap = float(np.max(np.abs(outputs["tf"][name] - value)))
        assert gap <= TOLERANCES["unet"]["forward"], f"{name}: max |tf - torch| = {gap:.3e}"


def test_records_follow_the_order_a_step_computes():
    """No framework: outputs in the reference's data-flow order, the loss, gradients last layer first, weights;
    a tensor only one side has is a divergence of its own."""
    ones = np.ones(3, np.float32)
    reference = {"output:a": ones, "output:b": ones, "loss:loss": np.float64(1.0), "gradient:a.weight": ones,
                 "gradient:b.weight": ones, "weight:a.weight": ones, "weight:b.weight": ones}
    other = {**reference, "weight:b.weight": ones * (1 + 1e-3), "optimizer_state:a.weight.momentum": ones}
    records = differences.step_records(0, other, reference, differences.tolerances_of("mlp"))
    assert [(r["quantity"], r["name"]) for r in records] == [
        ("output", "a"), ("output", "b"), ("loss", "loss"), ("gradient", "b.weight"), ("gradient", "a.weight"),
        ("weight", "a.weight"), ("weight", "b.weight"), ("optimizer_state", "a.weight.momentum")]
    assert [r["name"] for r in records if r["exceeds"]] == ["b.weight", "a.weight.momentum"]
    assert records[-1]["layer"] == "a" and "only on the TensorFlow side" in records[-1]["note"]
    assert records[-2]["rel"] == pytest.approx(1e-3, rel=1e-3)


def test_float64_twins_set_float32_rounding_apart():
    """No framework: a float32 difference beyond the table's tolerance whose float64 twins agree is rounding, and
    each side's own float32 error is measured against its float64 run; where the float64 twins differ, they part."""
    g32 = np.array([1.0, 2.0, 3.0], np.float32)
    g64 = g32.astype(np.float64)
    off = g32 * np.float32(1 + 1e-3)  # 1e-3 > grad 1e-4: beyond the float32 tolerance
    steps32 = {"tf": {"gradient:a.weight": off, "gradient:b.weight": g32},
               "torch": {"gradient:a.weight": g32, "gradient:b.weight": g32}}
    steps64 = {"tf": {"gradient:a.weight": g64, "gradient:b.weight": g64 * (1 + 1e-9)},
               "torch": {"gradient:a.weight": g64, "gradient:b.weight": g64}}
    tolerances = differences.tolerances_of("mlp")
    records = differences.step_records(0, steps32["tf"], steps32["torch"], tolerances)
    float64_tolerances = {q: {"row": "float64", "measure": "rel", "value": t["float64"]} for q, t in tolerances.items()}
    float64_records = differences.step_records(0, steps64["tf"], steps64["torch"], float64_tolerances)
    found = {r["name"]: r for r in differences.with_float64(records, float64_records, steps32, steps64)}
    assert found["a.weight"]["exceeds"] and found["a.weight"]["rounding"] and not found["a.weight"]["parts"]
    assert found["a.weight"]["own_rel"]["tf"] == pytest.approx(1e-3, rel=1e-3)
    assert found["a.weight"]["own_rel"]["torch"] == 0.0
    assert not found["b.weight"]["exceeds"] and found["b.weight"]["parts"]  # 1e-9 > float64's 1e-10
    assert found["b.weight"]["float64_rel"] == pytest.approx(1e-9, rel=1e-3)
    assert differences.first_divergence(list(found.values()), tolerances)["name"] == "b.weight"
    assert differences.rounding_summary(list(found.values()))["count"] == 1


def test_a_float32_momentum_parts_the_float64_twins(monkeypatch, tmp_path):
    """Keras casts SGD's momentum through a float32 tensor, 1e-8 off 0.9's float64 value: were PyTorch's float64 run
    given the exact 0.9 (its learning rate still rounded as Keras' is), the float64 twins would part at step 1, the
    first step a momentum enters, while step 0 agrees; with the float32 values on both sides (as float32 training
    uses them) they agree throughout (test_correct_twins_agree_for_k_steps)."""
    def learning_rate_only(optimizer):
        for group in optimizer.param_groups:
            group["lr"] = float(np.float32(group["lr"]))
        return optimizer

    monkeypatch.setattr(side_module("torch", "diagnose"), "float32_hyperparameters", learning_rate_only)
    found = diagnosed("mlp", tmp_path, steps=2)
    assert found["first"]["step"] == 1 and found["first"]["quantity"] in ("weight", "optimizer_state")
    assert 1e-10 < max(r["float64_rel"] for r in found["records"] if r["quantity"] == "optimizer_state") < 1e-7
    assert [r for r in found["records"] if r["parts"] and r["step"] == 0] == []


# ---- twins broken on purpose -----------------------------------------------------------------------------

def test_keras_batchnorm_epsilon_shows_in_the_first_batchnorm_output(monkeypatch, tmp_path, carvana):
    """Keras' default epsilon (1e-3) against PyTorch's 1e-5: the first BatchNorm's output at step 0."""
    build = side_module("tf", "unet").build
    monkeypatch.setattr(side_module("tf", "unet"), "build", lambda spec: build(spec.replace(bn_eps=1e-3)))
    found = diagnosed("unet", tmp_path, carvana, steps=1)
    assert where(found["first"]) == (0, "enc1.bn1", "output")


def test_missing_flatten_permutation_shows_in_fc1_output(monkeypatch, tmp_path):
    """fc1's rows not permuted from PyTorch's (C, H, W) flattening to Keras' (H, W, C): fc1's output at step 0,
    while both convolutions before it agree."""
    build = side_module("tf", "cnn").build

    def unpermuted(spec):
        model = build(spec)
        model.flattened_inputs = {}  # keras_models/weights.py now loads fc1 as a plain Dense
        return model

    monkeypatch.setattr(side_module("tf", "cnn"), "build", unpermuted)
    found = diagnosed("cnn", tmp_path, steps=1)
    assert where(found["first"]) == (0, "fc1", "output")


def test_unconverted_batchnorm_momentum_shows_only_in_running_statistics(monkeypatch, tmp_path, carvana):
    """Keras given PyTorch's 0.1 as its momentum (it wants 1 - 0.1): a training step normalises with the batch's
    statistics, so outputs and gradients agree; the running statistics after step 0 do not."""
    build = side_module("tf", "unet").build
    monkeypatch.setattr(side_module("tf", "unet"), "build", lambda spec: build(spec.replace(bn_momentum=0.9)))
    found = diagnosed("unet", tmp_path, carvana, steps=1)
    assert where(found["first"]) == (0, "enc1.bn1", "weight")
    assert found["first"]["name"] in ("enc1.bn1.running_mean", "enc1.bn1.running_var")
    for quantity in ("output", "loss", "gradient", "optimizer_state"):
        assert beyond(found["records"], quantity=quantity) == [], quantity
    assert {r["name"].rsplit(".", 1)[1] for r in beyond(found["records"], quantity="weight")} <= {
        "running_mean", "running_var"}


def test_wrong_sgd_momentum_shows_in_the_weights_after_the_second_step(monkeypatch, tmp_path):
    """SGD momentum 0.99 on the PyTorch side, 0.9 on Keras': the buffer starts at the gradient, so step 0 is plain
    SGD on both; step 1's gradients still agree (the same weights went in), its update does not."""
    make_optimizer = side_module("torch", "train").make_optimizer
    monkeypatch.setattr(side_module("torch", "train"), "make_optimizer",
                        lambda model, spec: make_optimizer(model, spec.replace(momentum=0.99)))
    found = diagnosed("mlp", tmp_path, steps=2)
    assert where(found["first"]) == (1, "fc1", "weight")
    assert beyond(found["records"], step=0) == []
    assert beyond(found["records"], step=1, quantity="gradient") == []


# ---- the command -----------------------------------------------------------------------------------------

def test_compare_diagnose_end_to_end(tmp_path):
    """compare.py --task mlp --diagnose 2 as a user runs it: a worker process per side, then results.json, the
    heat map and the report."""
    out = tmp_path / "run"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "TWINNETS_CACHE": str(tmp_path / "cache")}
    completed = subprocess.run([sys.executable, COMPARE, "--task", "mlp", "--diagnose", "2", "--sample-size",
                                "200", "--batch-size", "50", "--threads", "1", "--out", str(out)],
                               cwd=USER_DIR, env=env, capture_output=True, text=True, timeout=240)
    assert completed.returncode == 0, completed.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert results["task"] == "mlp" and results["config"]["steps"] == 2
    assert results["first_divergence"] is None
    assert {r["step"] for r in results["records"]} == {0, 1}
    assert results["tolerances"]["gradient"] == {"row": "grad", "measure": "rel", "value": TOLERANCES["mlp"]["grad"],
                                                 "float64": TOLERANCES["mlp"]["float64"]}
    assert results["largest"]["gradient"]["float64_rel"] <= TOLERANCES["mlp"]["float64"]
    assert (out / "diagnose.png").read_bytes()[:8] == PNG_MAGIC
    assert "Nothing exceeds its tolerance in 2 steps" in (out / "report.md").read_text()
    assert "nothing exceeds its tolerance in 2 steps" in completed.stdout
    assert not (out / "diagnose-job.json").exists()
