"""Learning-rate schedules on both sides: the learning rate of every optimizer step equal (Keras schedules against
PyTorch schedulers, and both against shared/schedules.py's formula), ReduceLROnPlateau reducing at the same epochs
for the same validation losses, and a resumed U-Net run continuing its schedule. Optimizers on one tensor keep the
step-by-step checks fast; the resume test trains a 2-filter U-Net on 16 px photos."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import side_module
from harness.registry import REGISTRY
from shared import schedules
from shared.tasks import make_spec

REGISTRY_UNET = REGISTRY["unet"]

STEPS_PER_EPOCH, EPOCHS = 4, 7
TOLERANCE = 1e-7  # absolute, on learning rates of 1e-2: Keras computes its schedules in float32


def one_tensor_optimizer(side: str, spec):
    """The side's optimizer for the spec over a single 3-vector, and a function that makes one update with a zero
    gradient (it advances the optimizer's step without moving anything)."""
    if side == "tf":
        import keras
        import tensorflow as tf

        variable = tf.Variable(np.zeros(3, np.float32))
        optimizer = keras.optimizers.SGD(learning_rate=spec.lr, momentum=spec.momentum)
        optimizer.build([variable])
        return optimizer, lambda: optimizer.apply_gradients([(tf.zeros(3), variable)])
    import torch

    parameter = torch.nn.Parameter(torch.zeros(3))
    optimizer = torch.optim.SGD([parameter], lr=spec.lr, momentum=spec.momentum)

    def update():
        parameter.grad = torch.zeros(3)
        optimizer.step()
    return optimizer, update


def record_lrs(side: str, spec, monitored: list[float] | None = None, restart_after: int | None = None,
               folder=None) -> list[float]:
    """The learning rate of every step of EPOCHS epochs, driven as CarvanaClassifier.train drives it; after each
    epoch the plateau rule sees the next monitored loss. restart_after: after that epoch, save the optimizer and the
    schedule as a checkpoint does, and continue with new ones restored from the files, as a resumed run does."""
    classifier = side_module(side, "classifier")
    optimizer, update = one_tensor_optimizer(side, spec)
    learning_rate = classifier.LearningRate(optimizer, spec, STEPS_PER_EPOCH, EPOCHS)
    lrs = []
    for epoch in range(1, EPOCHS + 1):
        for _ in range(STEPS_PER_EPOCH):
            lrs.append(float(learning_rate.begin_batch()))
            update()
            learning_rate.end_batch()
        learning_rate.end_epoch(epoch, {"val_loss": monitored[epoch - 1] if monitored else 1.0})
        if epoch == restart_after:
            side_module(side, "weights").save_optimizer(optimizer, folder / "optimizer")
            learning_rate.save(folder / "schedule")
            optimizer, update = one_tensor_optimizer(side, spec)
            learning_rate = classifier.LearningRate(optimizer, spec, STEPS_PER_EPOCH, EPOCHS)
            side_module(side, "weights").load_optimizer(optimizer, folder / "optimizer")
            learning_rate.load(folder / "schedule")
    return lrs


@pytest.mark.parametrize("warmup", [0, 2])
@pytest.mark.parametrize("schedule", ["constant", "cosine", "step"])
def test_every_step_has_the_same_learning_rate_on_both_sides(schedule, warmup):
    spec = make_spec("unet", schedule=schedule, warmup_epochs=warmup, step_epochs=2, lr_floor=0.05, epochs=EPOCHS)
    expected = [schedules.lr_at(spec, step, STEPS_PER_EPOCH, EPOCHS) for step in range(EPOCHS * STEPS_PER_EPOCH)]
    found = {side: record_lrs(side, spec) for side in ("torch", "tf")}
    for side, lrs in found.items():
        worst = int(np.argmax(np.abs(np.subtract(lrs, expected))))
        assert np.allclose(lrs, expected, rtol=0, atol=TOLERANCE), (
            f"{side} {schedule}: step {worst} has lr {lrs[worst]!r}, the formula {expected[worst]!r}")
    assert np.allclose(found["tf"], found["torch"], rtol=0, atol=TOLERANCE)
    # The schedules do what their names say: the warm-up rises from lr * warmup_start, the decay lands on its floor.
    assert expected[0] == pytest.approx(spec.lr * (spec.warmup_start if warmup else 1))
    if schedule == "cosine":
        assert expected[-1] == pytest.approx(spec.lr * spec.lr_floor, abs=spec.lr * 0.01)  # one step short of it
    if schedule == "step":  # decays every 2 epochs after the warm-up: 3 times in 7 - warmup epochs, or 2 times
        assert expected[-1] == pytest.approx(spec.lr * spec.step_gamma ** ((EPOCHS - warmup) // 2))


def test_default_is_a_constant_learning_rate_and_no_scheduler():
    """Today's behaviour, unchanged: no PyTorch scheduler, and Keras' plain learning-rate variable."""
    spec = make_spec("unet")
    assert (spec.schedule, spec.warmup_epochs) == ("constant", 0)
    for side in ("torch", "tf"):
        optimizer, _ = one_tensor_optimizer(side, spec)
        learning_rate = side_module(side, "classifier").LearningRate(optimizer, spec, STEPS_PER_EPOCH, EPOCHS)
        assert getattr(learning_rate, "scheduler", None) is None and learning_rate.plateau is None
    assert record_lrs("tf", spec) == pytest.approx([0.01] * EPOCHS * STEPS_PER_EPOCH, abs=1e-9)


def reduction_epochs(spec, lrs: list[float]) -> list[int]:
    """Epochs (counted from the warm-up's end) after which the learning rate fell."""
    firsts = lrs[::STEPS_PER_EPOCH]
    return [epoch - spec.warmup_epochs for epoch in range(1, EPOCHS)
            if firsts[epoch] < firsts[epoch - 1] * (1 - 1e-6) and epoch >= spec.warmup_epochs]


PLATEAU_CASES = [  # (patience, cooldown, warm-up epochs, validation losses)
    (1, 0, 0, [1.0, 0.9, 0.95, 0.95, 0.8, 0.85, 0.7]),
    (2, 0, 0, [1.0, 1.0, 1.0, 1.0, 1.0, 0.5, 0.5]),
    (1, 2, 0, [1.0, 1.1, 1.2, 1.3, 1.4, 1.5, 1.6]),
    (2, 1, 1, [1.0, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9]),
    (1, 3, 2, [0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1]),
    (2, 0, 0, [1.0, 0.99995, 0.9999, 0.9, 0.89995, 0.8999, 0.89985]),  # min_delta 1e-4: tiny gains do not count
]


@pytest.mark.parametrize("patience, cooldown, warmup, losses", PLATEAU_CASES)
def test_plateau_reduces_at_the_same_epochs_on_both_sides(patience, cooldown, warmup, losses):
    spec = make_spec("unet", schedule="plateau", plateau_patience=patience, plateau_cooldown=cooldown,
                     warmup_epochs=warmup, epochs=EPOCHS)
    found = {side: record_lrs(side, spec, losses) for side in ("torch", "tf")}
    expected = schedules.plateau_reductions(spec, losses[warmup:])
    expected = [epoch for epoch in expected if epoch + warmup < EPOCHS]  # a reduction after the last epoch is unseen
    assert np.allclose(found["tf"], found["torch"], rtol=1e-6, atol=0), (found["tf"], found["torch"])
    for side, lrs in found.items():
        assert reduction_epochs(spec, lrs) == expected, f"{side}: {lrs[::STEPS_PER_EPOCH]}"
    assert expected, "each case reduces at least once"
    # The rate after all reductions: lr * factor ** count, reached through the same epochs.
    assert found["torch"][-1] == pytest.approx(spec.lr * spec.plateau_factor ** len(expected))


@pytest.mark.parametrize("schedule", ["cosine", "step", "plateau"])
@pytest.mark.parametrize("side", ["torch", "tf"])
def test_the_schedule_survives_a_restart(side, schedule, tmp_path):
    """Saved and restored after epoch 3 (inside nothing: the warm-up is 2 epochs, the plateau has counted), the
    schedule goes on as if never stopped: PyTorch's scheduler and plateau state_dicts, Keras' iterations and the
    plateau callback's counters."""
    spec = make_spec("unet", schedule=schedule, warmup_epochs=2, step_epochs=2, plateau_patience=2, epochs=EPOCHS)
    losses = [1.0, 0.9, 0.8, 0.85, 0.9, 0.95, 0.7]  # the plateau counts epochs 4 and 5 across the restart
    straight = record_lrs(side, spec, losses)
    restarted = record_lrs(side, spec, losses, restart_after=3, folder=tmp_path)
    assert np.allclose(restarted, straight, rtol=0, atol=TOLERANCE), (restarted, straight)
    assert len(set(np.round(straight, 12))) > 2, "the schedule moves"


def test_torch_is_given_keras_patience_and_cooldown_less_one():
    spec = make_spec("unet", plateau_patience=3, plateau_cooldown=2)
    assert (schedules.torch_plateau_patience(spec), schedules.torch_plateau_cooldown(spec)) == (2, 1)
    assert schedules.torch_plateau_cooldown(make_spec("unet", plateau_cooldown=0)) == 0


# ---- resuming a U-Net run continues its schedule ------------------------------------------------------------

class Killed(Exception):
    """Raised by a callback to stop training as a kill would, after the last checkpoint."""


class KillAtEpoch:
    """Kills the run at the end of `epoch`, before its checkpoint: the run restarts from the epoch before."""

    def __init__(self, epoch: int):
        self.epoch = epoch

    def __getattr__(self, hook):
        return lambda *args, **kwargs: None

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.epoch:
            raise Killed


@pytest.fixture(scope="module")
def two_cars(tmp_path_factory):
    from shared.data import carvana
    from shared.data.synthetic_cars import generate_synthetic_carvana

    root = generate_synthetic_carvana(tmp_path_factory.mktemp("resume") / "carvana", n_cars=2, n_test_cars=0,
                                      size=(48, 32))
    return carvana.get_train_files(carvana.resolve_carvana(root), None, 0.5, seed=0)


RESUMED = {"image_size": 16, "base_filters": 2, "depth": 2, "batch_size": 8, "epochs": 3, "optimizer": "adam",
           "lr": 1e-3}


def test_a_resumed_run_continues_the_schedule(two_cars, tmp_path):
    """Killed after epoch 1's checkpoint and resumed, a U-Net run steps through the learning rates of one never
    stopped: CarvanaClassifier's Checkpointer saves and restores the scheduler with the optimizer. PyTorch only:
    Keras' side is the same Checkpointer call, and its schedule state is checked above without a model (three
    traced U-Nets would cost the suite half a minute)."""
    from shared.data import carvana
    from shared.init import init_weights
    from shared.loaders import Loaders
    from shared.weights import unet_layout

    spec = make_spec("unet", **RESUMED, schedule="cosine", warmup_epochs=1)
    task = REGISTRY_UNET.surface("torch", spec).task
    train, valid = two_cars

    def run(callbacks=()):
        model = task.build(spec)
        task.load_weights(model, init_weights(unet_layout(spec), spec.seed))
        loaders = Loaders(task.make_loader(carvana.TrainImageDataset(train, 16, seed=0), 8, 0, True),
                          task.make_loader(carvana.TrainImageDataset(valid, 16, seed=0), 8, 0, False))
        return task.train(model, spec, loaders, list(callbacks), tmp_path / "checkpoint", verbose=False)

    with pytest.raises(Killed):
        run([KillAtEpoch(2)])
    resumed = run()
    steps_per_epoch = 2  # 16 photos in batches of 8
    expected = [schedules.lr_at(spec, step, steps_per_epoch, spec.epochs) for step in range(3 * steps_per_epoch)]
    assert np.allclose(resumed["batch_lrs"], expected, rtol=0, atol=TOLERANCE), (resumed["batch_lrs"], expected)
    assert [h["lr"] for h in resumed["history"]] == pytest.approx(expected[steps_per_epoch - 1::steps_per_epoch])
    assert len(resumed["history"]) == 3 and resumed["batch_lrs"][0] == pytest.approx(spec.lr * spec.warmup_start)
