"""mlp and cnn on one side: the digits prepared once, the canonical initial weights probed, trained, evaluated; and
the mlp's real training epoch the autograd lesson's retracing pitfall runs on."""
from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from harness.drift import DriftRecorder
from harness.surface import Surface, open_surface
from shared import metrics
from shared.data import mnist
from shared.data.batches import LabelledImages
from shared.execution import Execution
from shared.graph_lessons import DigitsEpoch
from shared.init import init_weights
from shared.loaders import Loaders
from shared.tasks import CNNSpec, MLPSpec, make_spec
from shared.weights import Weights, mlp_layout, save_weights

TRAINER = "train"  # the side module that trains mlp and cnn (tf_impl/train.py, torch_impl/train.py)


def prepare_mnist(spec: MLPSpec | CNNSpec, data_dir: Path | None, download: bool) -> dict:
    """Resolve and validate the digits once, in the parent, before any side starts; the result (plain JSON)
    tells each side where to load them from."""
    if download:
        data_dir = mnist.download_mnist()
    loaded = mnist.load_mnist(data_dir, seed=spec.seed, sample_size=spec.sample_size)
    return {"data_dir": None if data_dir is None else str(data_dir), "description": loaded.describe()}


def digit_sets(spec: MLPSpec | CNNSpec, data: dict | None) -> tuple[LabelledImages, LabelledImages]:
    """The training and test digits, normalised the same way for both sides (the spec's mean and std)."""
    loaded = mnist.load_mnist((data or {}).get("data_dir"), seed=spec.seed, sample_size=spec.sample_size)
    return (LabelledImages(mnist.normalize(loaded.train_images, spec.mean, spec.std), loaded.train_labels),
            LabelledImages(mnist.normalize(loaded.test_images, spec.mean, spec.std), loaded.test_labels))


@functools.lru_cache(maxsize=2)
def _training_digits(sample_size: int | None) -> LabelledImages:
    """The embedded training digits, loaded once per process (both sides' lessons in one process share them)."""
    return digit_sets(make_spec("mlp", sample_size=sample_size), {"data_dir": None})[0]


def digits_epoch(side: str, sample_size: int | None = None) -> DigitsEpoch:
    """What the autograd lesson's batch-shape pitfall runs on: the mlp's embedded training digits, the side's mlp
    surface and the canonical initial weights (built here, not through harness/registry.py, which imports this)."""
    spec = make_spec("mlp", sample_size=sample_size)
    initial = init_weights(mlp_layout(spec), spec.seed)
    return DigitsEpoch(spec, open_surface(side, spec, TRAINER), initial, _training_digits(sample_size))


def train_digits(spec: MLPSpec | CNNSpec, data: dict | None) -> tuple[LabelledImages, str]:
    """What the benchmark's pipeline row loads: the training digits, and what an epoch of them is."""
    train_set = digit_sets(spec, data)[0]
    return train_set, f"{len(train_set)} in-memory digits"


def run_classifier(surface: Surface, spec: MLPSpec | CNNSpec, initial: Weights, out_dir: Path,
                   data: dict | None = None, execution: Execution | None = None,
                   control: bool = False) -> tuple[dict, np.ndarray]:
    """Load the canonical initial weights, probe them on the first test batch, train, evaluate, save; the weights'
    drift is recorded on the way (a control run is the same run, only its initial weights or threads differ)."""
    task, (train_set, test_set) = surface.task, digit_sets(spec, data)
    model = task.build(spec)
    task.load_weights(model, initial)
    probe = task.forward(model, test_set.images[:spec.batch_size])
    model = surface.training_model(spec, model, initial, execution)
    loaders = Loaders(task.make_loader(train_set, spec.batch_size, spec.seed, True),
                      task.make_loader(test_set, spec.batch_size, spec.seed, False))
    callbacks = [DriftRecorder(lambda: task.export_weights(model), out_dir / "drift.npz")]
    if not control:  # the loss and accuracy per epoch, and the model graph, under the same tags on both sides
        logger = surface.module("callbacks").TensorboardLoggerCallback
        callbacks.append(logger(out_dir / "tensorboard", model, test_set.images[:1]))
    run = task.train(model, spec, loaders, callbacks, out_dir / "checkpoint", execution)
    final = run["history"][-1]
    predicted = task.predict(model, test_set.images)
    checkpoint = save_weights(task.export_weights(model), out_dir / "checkpoint.safetensors")
    result = {
        "history": run["history"],
        "batch_losses": run["batch_losses"],
        "metrics": {"test_accuracy": final["test_accuracy"], "test_loss": final["test_loss"],
                    "final_train_loss": run["batch_losses"][-1], "parameters": task.count_parameters(model)},
        "timing": run["timing"],
        "traces": run["traces"],
        "graph": {"traces": run["traces"], "graph_ops": run["graph_ops"], "autograd_nodes": run["autograd_nodes"]},
        **({"engine": run["engine"]} if run.get("engine") else {}),  # a Keras arm's: what its engine made of the step
        "confusion_matrix": metrics.confusion_matrix(test_set.labels, predicted).tolist(),
        "artifacts": {"checkpoint": str(checkpoint),
                      **({} if control else {"tensorboard": str(out_dir / "tensorboard")})},
    }
    return result, probe
