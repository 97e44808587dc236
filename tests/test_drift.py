"""Equal up to rounding: the 1-ulp control's perturbation, the weight sketch against the exact distance, the recorder's
steps, the verdict on curves made to agree and to part, and the seeds' Student t intervals."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from scipy import stats

from harness import drift, seeds
from harness.jobs import Run, RunJob, WorkerOrder
from shared.errors import UserError


def test_perturb_ulp_moves_every_float32_value_by_one_unit_upward():
    weights = {"fc1.weight": np.array([[0.5, -0.25], [1e-30, 0.0]], np.float32), "fc1.bias": np.ones(2, np.float32)}
    moved = drift.perturb_ulp(weights)
    for name, value in weights.items():
        assert moved[name].dtype == np.float32
        assert np.all(moved[name] > value)
        assert np.array_equal(moved[name], np.nextafter(value, np.float32(np.inf)))
        assert np.array_equal(np.nextafter(moved[name], np.float32(-np.inf)), value)  # exactly one step away


def test_the_count_sketch_keeps_the_distance_within_two_percent():
    rng = np.random.default_rng(0)
    length = 4 * drift.SKETCH_SIZE
    a = rng.standard_normal(length)
    b = a + 1e-6 * rng.standard_normal(length)  # a tiny difference, as between two training runs
    sketch = drift.WeightSketch(length)
    assert not sketch.exact
    estimated = np.linalg.norm(sketch(a) - sketch(b)) / np.linalg.norm(sketch(b))
    exact = np.linalg.norm(a - b) / np.linalg.norm(b)
    assert abs(estimated / exact - 1) < 0.02, (estimated, exact)
    small = drift.WeightSketch(100)
    assert small.exact and np.array_equal(small(a[:100]), a[:100])


def test_the_recorder_keeps_the_first_steps_and_every_epoch(tmp_path):
    """Before training, after each of the first FIRST_STEPS steps, then after each epoch only."""
    weights = {"w": np.zeros(3, np.float32)}
    recorder = drift.DriftRecorder(lambda: weights, tmp_path / "drift.npz")
    recorder.on_train_begin()
    steps_per_epoch = 30
    for epoch in (1, 2, 3):
        for step in range((epoch - 1) * steps_per_epoch + 1, epoch * steps_per_epoch + 1):
            weights["w"] = weights["w"] + 1
            recorder.on_batch_end(step)
        recorder.on_epoch_end(epoch)
    recorder.on_train_end()
    saved = np.load(tmp_path / "drift.npz")
    assert list(saved["steps"]) == list(range(0, drift.FIRST_STEPS + 1)) + [60, 90]
    assert np.array_equal(saved["sketches"][-1], [90.0, 90.0, 90.0]) and bool(saved["exact"])


def fake_runs(cross_scale: np.ndarray) -> dict:
    """Three runs' weight sketches: each control 1e-6 * step from its side, the two sides cross_scale apart."""
    steps = np.arange(0, 60)
    base = np.ones((len(steps), 4))
    growth = (1e-6 * steps)[:, None] * np.array([1.0, -1.0, 0.5, 0.0])
    torch = base + cross_scale[:, None] * growth
    runs = {"tf": base, "torch": torch, "tf-control": base + growth, "torch-control": torch - growth}
    return {name: {"batch_losses": list(1.0 + sketch[1:, 0]), "steps": steps, "sketches": sketch}
            for name, sketch in runs.items()}


def test_the_verdict_finds_drift_within_the_controls():
    measured = drift.measure(fake_runs(np.full(60, 2.0)))
    verdict = measured["verdict"]
    assert verdict["within_noise"] is True and verdict["exceeds_from_step"] is None
    assert verdict["median_ratio"] == pytest.approx(2.0, rel=1e-3)
    assert measured["pairs"]["tf-torch"]["horizon"] is None  # 2e-6 * 59 stays below 1e-3


def test_the_verdict_finds_a_lasting_excess_and_the_step_it_starts():
    """The two sides part 1000x faster than the controls from step 20: a lasting excess from step 20, and the
    cross pair reaches the divergence horizon first."""
    scale = np.where(np.arange(60) >= 20, 1000.0, 1.0)
    measured = drift.measure(fake_runs(scale))
    verdict = measured["verdict"]
    assert verdict["within_noise"] is False and verdict["exceeds_from_step"] == 20
    assert "more than rounding explains from step 20" in verdict["sentence"]
    horizons = verdict["horizons"]
    assert horizons["tf-torch"] == 20 and horizons["tf-control"] is None
    spike = np.ones(60)
    spike[30] = 1e6  # one noisy point is not a lasting excess
    assert drift.measure(fake_runs(spike))["verdict"]["within_noise"] is True


def test_without_a_control_the_verdict_says_so():
    runs = fake_runs(np.ones(60))
    measured = drift.measure({name: runs[name] for name in ("tf", "torch")})
    assert measured["verdict"]["within_noise"] is None and "--control none" in measured["verdict"]["sentence"]


def test_seeds_are_a_count_or_a_list():
    assert seeds.parse_seeds("3") == [0, 1, 2] and seeds.parse_seeds("4,7") == [4, 7] and seeds.parse_seeds("5,") == [5]
    for bad in ("", "x", "1,1", "-1", "0"):
        with pytest.raises(UserError):
            seeds.parse_seeds(bad)


def test_the_interval_is_students_t():
    values = [0.97, 0.95, 0.99, 0.96]
    found = seeds.interval(values)
    half = stats.t.ppf(0.975, 3) * np.std(values, ddof=1) / 2
    assert found["mean"] == pytest.approx(0.9675) and found["high"] - found["mean"] == pytest.approx(half)
    assert seeds.interval([0.5])["low"] is None


def results_of(tf: float, torch: float, tf_control: float, torch_control: float) -> dict:
    def entry(value: float) -> dict:
        return {"metrics": {"val_dice": value}}

    return {"frameworks": {"tf": entry(tf), "torch": entry(torch)},
            "controls": {"tf": entry(tf_control), "torch": entry(torch_control)}}


def test_a_systematic_framework_difference_is_told_apart_from_the_controls():
    apart = {seed: results_of(0.95 + 0.001 * seed, 0.90 + 0.002 * seed, 0.95 + 0.001 * seed + 0.0005 * (-1) ** seed,
                              0.90 + 0.002 * seed - 0.0005 * (-1) ** seed) for seed in range(4)}
    summary = seeds.summarize(apart, "val_dice")
    assert summary["paired"]["tf-torch"]["low"] > 0
    assert summary["sentence"].endswith("the framework difference is distinguishable from the control's.")
    alike = {seed: results_of(0.95 + 0.01 * (-1) ** seed, 0.95, 0.95, 0.95 + 0.01 * (-1) ** seed)
             for seed in range(4)}
    assert seeds.summarize(alike, "val_dice")["sentence"].endswith("not distinguishable from the control's.")



def test_each_side_and_its_control_share_a_process():
    """TensorFlow first (the other side's agreement masks need its weights), each side with its 1-ulp control in one
    process; a 1-thread control needs a process of its own (TensorFlow fixes its thread pools when it starts)."""
    job = RunJob(task="mlp", spec={}, threads=1, out="", data=None, sides=["torch", "tf"], control="ulp")
    tf, torch = Run("tf"), Run("torch")
    tf_control, torch_control = Run("tf", control=True), Run("torch", control=True)
    assert job.groups() == [[tf, tf_control], [torch, torch_control]]
    assert replace(job, control="threads").groups() == [[tf], [torch], [tf_control], [torch_control]]
    assert replace(job, control="none").groups() == [[tf], [torch]]
    assert replace(job, sides=["torch"], control="none").groups() == [[torch]]
    assert [run.folder for run in job.runs] == ["torch", "tf", "torch-control", "tf-control"]


def test_a_grouped_pytorch_worker_keeps_tensorflow_out(monkeypatch):
    """A worker running PyTorch and its control is PyTorch's: it sets TensorBoard's no-TensorFlow marker (without it
    torch.utils.tensorboard imports all of TensorFlow into the PyTorch process); TensorFlow's worker does not."""
    from harness import worker

    marked = []
    monkeypatch.setattr(worker, "keep_tensorflow_out", lambda: marked.append(True))
    monkeypatch.setitem(worker.WORK, "train", lambda order: None)
    torch_order = WorkerOrder("train", "torch", "job.json", (Run("torch"), Run("torch", control=True)))
    assert WorkerOrder.from_argument(torch_order.to_argument()) == torch_order
    assert worker.main([torch_order.to_argument()]) == 0
    assert marked == [True]
    tf_order = WorkerOrder("train", "tf", "job.json", (Run("tf"), Run("tf", control=True)))
    assert worker.main([tf_order.to_argument()]) == 0
    assert marked == [True]
