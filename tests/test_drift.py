"""Equal up to rounding: the 1-ulp control's perturbation, the weight sketch against the exact distance, the recorder's
steps, the verdict on curves made to agree and to part (per arm too), the parity of every side, and the seeds'
Student t intervals."""
from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from dataclasses import replace

import numpy as np
import pytest

from conftest import ROOT
from harness import drift, parity, report, seeds
from harness.jobs import Run, RunJob
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


def arm_runs(scales: dict[str, float], controls: tuple[str, ...]) -> dict:
    """TensorFlow's weights and a side per scale, scale times the control's growth away from TensorFlow from step 1
    on; each side in `controls` with a control 1e-6 * step away from it."""
    steps = np.arange(0, 60)
    base = np.ones((len(steps), 4))
    growth = (1e-6 * steps)[:, None] * np.array([1.0, -1.0, 0.5, 0.0])
    sketches = {"tf": base, **{side: base + scale * growth for side, scale in scales.items()}}
    sketches.update({f"{side}-control": sketches[side] - growth for side in controls})
    return {name: {"batch_losses": list(1.0 + sketch[1:, 0]), "steps": steps, "sketches": sketch}
            for name, sketch in sketches.items()}


def test_pairs_join_each_side_to_the_reference_and_to_its_control():
    runs = dict.fromkeys(["tf", "torch", "keras-jax", "keras-tf", "tf-control", "keras-jax-control"])
    assert drift.pairs_of(runs) == {"tf-torch": ("tf", "torch"), "tf-keras-jax": ("tf", "keras-jax"),
                                    "tf-keras-tf": ("tf", "keras-tf"), "tf-control": ("tf", "tf-control"),
                                    "keras-jax-control": ("keras-jax", "keras-jax-control")}
    assert drift.pairs_of(dict.fromkeys(["keras-jax", "keras-torch"])) == {
        "keras-jax-keras-torch": ("keras-jax", "keras-torch")}  # without TensorFlow the first side is the reference
    assert drift.PAIR_NAMES["tf-keras-jax"] == "TensorFlow vs Keras on JAX"
    assert drift.PAIR_NAMES["keras-torch-control"] == "Keras on PyTorch vs its control"
    assert drift.pair_sides("keras-tf-keras-jax") == ("keras-tf", "keras-jax")


def test_each_arm_is_judged_against_the_noise_floor():
    """PyTorch 2x and Keras on JAX 3x the controls' drift: within; Keras on JAX ran no control, so the native
    controls stand in. Keras on PyTorch 1000x: beyond from step 1, and 1e-3 apart at step 2."""
    measured = drift.measure(arm_runs({"torch": 2.0, "keras-jax": 3.0, "keras-torch": 1000.0},
                                      controls=("tf", "torch", "keras-torch")))
    verdicts = measured["verdicts"]
    assert list(verdicts) == ["tf-torch", "tf-keras-jax", "tf-keras-torch"]
    assert measured["verdict"] == verdicts["tf-torch"] and verdicts["tf-torch"]["controls"] == ["tf-control",
                                                                                                 "torch-control"]
    assert verdicts["tf-torch"]["within_noise"] is True
    assert verdicts["tf-torch"]["median_ratio"] == pytest.approx(2.0, rel=1e-3)
    jax = verdicts["tf-keras-jax"]
    assert jax["within_noise"] is True and jax["borrowed"] and jax["controls"] == ["tf-control", "torch-control"]
    assert jax["median_ratio"] == pytest.approx(3.0, rel=1e-3)
    assert jax["sentence"].startswith("TensorFlow and Keras on JAX drift apart no more than the native sides")
    assert "Keras on JAX ran no control" in jax["sentence"]
    far = verdicts["tf-keras-torch"]
    assert far["within_noise"] is False and far["exceeds_from_step"] == 1 and not far["borrowed"]
    assert far["controls"] == ["tf-control", "keras-torch-control"]
    assert far["median_ratio"] == pytest.approx(1000.0, rel=0.05)
    assert far["horizons"] == {"tf-keras-torch": 2, "tf-control": None, "keras-torch-control": None}
    assert "TensorFlow and Keras on PyTorch drift apart more than rounding explains from step 1" in far["sentence"]
    assert drift.sentences(measured) == [found["sentence"] for found in verdicts.values()]


def test_the_drift_of_the_arms_is_drawn_and_reported(tmp_path):
    measured = drift.measure(arm_runs({"torch": 2.0, "keras-jax": 3.0}, controls=("tf", "torch", "keras-jax")))
    measured.update(control="ulp", exact=True)
    assert drift.plot_drift(measured, tmp_path / "drift.png", "ulp").stat().st_size > 10_000
    section = report.drift_section({"drift": measured})
    assert all(f"**{sentence}**" in section for sentence in drift.sentences(measured))
    assert "TensorFlow and Keras on JAX drift apart no more than each framework drifts from itself" in section


def test_the_parity_table_flags_a_probe_beyond_the_tolerance(tmp_path):
    probe = np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4)
    planted = {"tf": probe, "torch": probe + 1e-7, "keras-jax": probe - 4e-6, "keras-torch": probe + 3e-5}
    for side, found in planted.items():
        (tmp_path / side).mkdir()
        np.save(tmp_path / side / "probe.npy", found)
    found = parity.run_parity(tmp_path, list(planted), 1e-5, "log-probabilities")
    assert found["reference"] == "tf" and found["passed"] is False
    assert found["max_abs_diff"] == pytest.approx(1e-7, rel=0.5)  # the first pair's, as before
    assert {side: row["passed"] for side, row in found["sides"].items()} == {"torch": True, "keras-jax": True,
                                                                            "keras-torch": False}
    assert found["sides"]["keras-torch"]["max_abs_diff"] == pytest.approx(3e-5, rel=0.05)
    both = parity.run_parity(tmp_path, ["keras-jax", "torch"], 1e-5, "x")
    assert both["reference"] == "keras-jax" and both["passed"] and list(both["sides"]) == ["torch"]
    lines = report.table({"frameworks": {side: {"metrics": {}} for side in planted}, "parity": found}).splitlines()
    assert "parity: max |tf - torch| = 1.192e-07 (tolerance 1e-05): PASSED" in lines  # as the console said before
    assert any(line.startswith("parity: max |tf - keras-torch| = 3.") and line.endswith("FAILED") for line in lines)


def test_seeds_are_a_count_or_a_list():
    assert seeds.parse_seeds("3") == [0, 1, 2] and seeds.parse_seeds("4,7") == [4, 7] and seeds.parse_seeds("5,") == [5]
    for bad in ("", "x", "1,1", "-1", "0"):
        with pytest.raises(UserError):
            seeds.parse_seeds(bad)


def test_the_interval_is_students_t():
    """Worked by hand: mean 0.9675, sample sd 0.017078 (n - 1 = 3), t(0.975; 3) = 3.1824 from a printed table, so
    the half-width is 3.1824 * 0.017078 / sqrt(4) = 0.027175. A normal quantile (1.96: 0.016737), the population sd
    (0.014790: 0.023534) or no sqrt(n) (0.054351) each land elsewhere."""
    found = seeds.interval([0.97, 0.95, 0.99, 0.96])
    assert found["mean"] == pytest.approx(0.9675) and found["sd"] == pytest.approx(0.017078, abs=1e-6)
    assert (found["low"], found["high"]) == (pytest.approx(0.940325, abs=1e-5), pytest.approx(0.994675, abs=1e-5))
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


# A real worker process (harness/worker.py's main, its own settings) whose order is PyTorch's: its work opens the
# PyTorch side's TensorBoard writer, as a run's callbacks do, then reports which frameworks the process holds.
WORKER_CHILD = textwrap.dedent("""
    import json, sys
    from harness import worker
    from harness.jobs import Run, WorkerOrder

    def work(order):
        from torch_impl.callbacks import TensorboardLoggerCallback
        logger = TensorboardLoggerCallback(sys.argv[2])
        logger.on_train_begin()
        logger.on_epoch_end(1, {"epoch": 1, "loss": 0.5})
        logger.on_train_end()
        print(json.dumps(sorted({name.split(".")[0] for name in sys.modules} & {"tensorflow", "torch"})))

    worker.WORK["train"] = work
    order = WorkerOrder("train", sys.argv[1], "job.json", (Run(sys.argv[1]), Run(sys.argv[1], control=True)))
    sys.exit(worker.main([order.to_argument()]))
""")


def test_a_pytorch_worker_keeps_tensorflow_out(tmp_path):
    """A worker running PyTorch and its control writes TensorBoard logs with PyTorch's writer and never loads
    TensorFlow (without TensorBoard's no-TensorFlow marker, torch.utils.tensorboard imports all of it): read from the
    worker process's own sys.modules."""
    completed = subprocess.run([sys.executable, "-c", WORKER_CHILD, "torch", str(tmp_path / "tb")], cwd=ROOT,
                               capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert json.loads(completed.stdout.strip().splitlines()[-1]) == ["torch"]
    assert list((tmp_path / "tb").glob("events.out.tfevents*")), "the writer wrote no event file"


def test_seeds_pair_each_arm_with_the_reference_and_its_controls(tmp_path):
    """Keras on JAX 0.05 below TensorFlow on every seed, with no control of its own: distinguishable against the
    native controls; PyTorch alike."""
    def entry(value: float) -> dict:
        return {"metrics": {"val_dice": value}}

    per_seed = {seed: {"frameworks": {"tf": entry(0.95 + 0.01 * seed), "torch": entry(0.95 + 0.01 * seed),
                                      "keras-jax": entry(0.90 + 0.01 * seed + 0.001 * (-1) ** seed)},
                       "controls": {"tf": entry(0.95 + 0.01 * seed + 0.002 * (-1) ** seed),
                                    "torch": entry(0.95 + 0.01 * seed - 0.002 * (-1) ** seed)}} for seed in range(4)}
    summary = seeds.summarize(per_seed, "val_dice")
    assert list(summary["paired"]) == ["tf-torch", "tf-keras-jax", "tf-control", "torch-control"]
    assert summary["paired"]["tf-keras-jax"]["mean"] == pytest.approx(0.05)
    assert "TensorFlow minus Keras on JAX val_dice is +0.0500" in summary["sentence"]
    assert summary["sentence"].endswith("for PyTorch, the framework difference is not distinguishable from the "
                                        "control's; for Keras on JAX, the framework difference is distinguishable "
                                        "from the control's.")
    text = seeds.seeds_report({"task": "unet", "seeds": {**summary, "verdicts": {}}})
    assert re.search(r"^\| Keras on JAX +\| 0\.9150 +\|", text, re.M)  # cells padded to their column's width
    assert re.search(r"^\| TensorFlow - Keras on JAX +\| 0\.0500 +\|", text, re.M)
    assert seeds.plot_seeds(summary, tmp_path / "seeds.png").is_file()
