"""Runs one task on one side through that side's surface (build, load_weights, forward, train, ...).
The side's modules are handed in by compare.py, so this file never imports a framework itself."""
from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from shared import metrics, weights
from shared.callbacks import PredictionsSaverCallback
from shared.data import carvana, mnist, synthetic_cars
from shared.errors import UserError
from shared.execution import Execution
from shared.init import init_weights
from shared.rle import read_rle_csv
from shared.tasks import TaskSpec

# Parity tolerance (max abs difference of the probe arrays) per task, one table for the harness and tests.
PARITY_TOLERANCE = {"neuron": 1e-6, "autograd": 1e-6, "mlp": 1e-5, "cnn": 1e-5, "unet": 1e-4}
PARITY_PROBES = {
    "neuron": "w, b and O at every gradient step",
    "autograd": "dz/dx",
    "mlp": "log-probabilities of the initial weights on the first test batch",
    "cnn": "log-probabilities of the initial weights on the first test batch",
    "unet": "logits of the initial weights on the first validation batch",
}


def sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z))


def analytic_neuron_gradient(w: float, b: float, phi: float, target: float) -> tuple[float, float]:
    """dE/dw = (O - t) O (1 - O) phi and dE/db = (O - t) O (1 - O), for E = 1/2 (O - t)^2."""
    output = sigmoid(phi * w + b)
    delta = (output - target) * output * (1 - output)
    return delta * phi, delta


def run_neuron(side: SimpleNamespace, spec: TaskSpec, out_dir: Path, data=None) -> tuple[dict, np.ndarray]:
    """Fit the neuron; check the side's gradient at the start against the analytic one."""
    model = side.task.build(spec)
    backprop = side.task.gradients(model, spec.phi, spec.target)
    analytic = analytic_neuron_gradient(spec.w0, spec.b0, spec.phi, spec.target)
    run = side.task.train(spec)
    trajectory = run["trajectory"]
    result = {
        "history": run["history"],
        "trajectory": trajectory,
        "final_output": trajectory[-1]["output"],
        "metrics": {"final_output": trajectory[-1]["output"], "final_error": trajectory[-1]["error"],
                    "w": trajectory[-1]["w"], "b": trajectory[-1]["b"],
                    "gradient_vs_analytic_max_abs": float(np.max(np.abs(np.subtract(backprop, analytic))))},
        "timing": run["timing"],
        "traces": run.get("traces"),
        "artifacts": {},
    }
    probe = np.array([[p["w"], p["b"], p["output"]] for p in trajectory])
    return result, probe


def run_autograd(side: SimpleNamespace, spec: TaskSpec, out_dir: Path, data=None) -> tuple[dict, np.ndarray]:
    """The tensors-and-autograd lesson; the probe is the gradient dz/dx."""
    lesson = side.task.lesson(spec)
    result = {
        "history": [],
        "metrics": {"grad_mean": float(np.mean(lesson["grad"])), "traces": lesson["tracing"]["traces"]},
        "timing": {},
        "artifacts": {},
        **lesson,
    }
    return result, np.asarray(lesson["grad"], dtype=np.float64)


def prepare_data(spec: TaskSpec, data_dir, download: bool) -> dict:
    """Resolve and validate the task's dataset once, in the parent, before any side starts;
    the result (plain JSON) tells each side where to load it from."""
    if spec.name in ("mlp", "cnn"):
        if download:
            data_dir = mnist.download_mnist()
        data = mnist.load_mnist(data_dir, seed=spec.seed, sample_size=spec.sample_size)
        return {"data_dir": None if data_dir is None else str(data_dir), "description": data.describe()}
    if spec.name == "unet":
        return prepare_carvana(spec, data_dir, download)
    raise UserError(f"task {spec.name!r} has no data loader")


def prepare_carvana(spec: TaskSpec, data_dir, download: bool) -> dict:
    """The real Carvana files (a folder, its zips, or a download), or the generated synthetic-carvana set."""
    if download:
        data_dir = carvana.DatasetFetcher().download_dataset(carvana.default_download_dir())
    if data_dir is None:
        data_dir = synthetic_cars.synthetic_carvana(n_cars=spec.synthetic_cars, n_test_cars=spec.synthetic_test_cars,
                                                    seed=spec.seed)
        source = synthetic_cars.SOURCE_NAME
    else:
        source = "carvana"
    layout = carvana.resolve_carvana(data_dir)
    train, valid = carvana.get_train_files(layout, spec.sample_size, spec.validation_size, spec.seed)
    carvana.check_pair_sizes(train + valid)
    if layout.masks_csv is not None:
        read_rle_csv(layout.masks_csv)  # a broken row fails here, in one line naming the file and the row
    carvana.read_pair(train[0])  # fail early, in one line, on an unreadable first pair
    test = carvana.get_test_files(layout) if layout.test_dir is not None else []
    description = {"source": source, "location": str(layout.root), "train": len(train), "valid": len(valid),
                   "test": len(test), "cars": len({s.car for s in train + valid}),
                   "image_size": spec.image_size, "mask_size": spec.output_size,
                   "resize": "photos squeezed to a square (aspect ratio not kept), masks by nearest neighbour"}
    return {"data_dir": str(data_dir), "description": description}


def unet_train_set(spec: TaskSpec, data: dict, train_samples=None) -> carvana.TrainImageDataset:
    """The training photos as the U-Net sees them: resized (and padded for the original net), augmented."""
    if train_samples is None:
        layout = carvana.resolve_carvana(data["data_dir"], include_test=False)
        train_samples, _ = carvana.get_train_files(layout, spec.sample_size, spec.validation_size, spec.seed)
    pad = (spec.image_size - spec.output_size) // 2  # 0 for the padded U-Net
    return carvana.TrainImageDataset(train_samples, spec.output_size, augment=spec.augment, seed=spec.seed, pad=pad)


def training_model(side: SimpleNamespace, spec: TaskSpec, model, initial: dict, execution: Execution | None):
    """The probe ran a float32 model; under mixed precision TensorFlow's dtype policy is fixed when the model is
    built, so the model to train is built again under the policy, from the same weights."""
    if execution is None or execution.precision == "fp32":
        return model
    side.runtime.configure_execution(execution)
    model = side.task.build(spec)
    side.weights.load_weights(model, initial)
    return model


def run_unet(side: SimpleNamespace, spec: TaskSpec, out_dir: Path, data=None,
             execution: Execution | None = None) -> tuple[dict, np.ndarray]:
    """Train the U-Net with the four callbacks, from the canonical initial weights; the probe is the
    initial model's logits on the first validation (or training) batch."""
    layout = carvana.resolve_carvana(data["data_dir"])
    train_samples, valid_samples = carvana.get_train_files(layout, spec.sample_size, spec.validation_size, spec.seed)
    pad = (spec.image_size - spec.output_size) // 2  # 0 for the padded U-Net
    train_set = unet_train_set(spec, data, train_samples)
    valid_set = (carvana.TrainImageDataset(valid_samples, spec.output_size, augment=False, seed=spec.seed, pad=pad)
                 if valid_samples else None)
    probe_set = valid_set or carvana.TrainImageDataset(train_samples, spec.output_size, seed=spec.seed, pad=pad)
    probe_images = np.stack([probe_set.get(i)[0] for i in range(min(spec.batch_size, len(probe_set)))])

    model = side.task.build(spec)
    initial = init_weights(weights.unet_layout(spec), spec.seed)
    side.weights.load_weights(model, initial)
    probe = side.classifier.forward(model, probe_images)

    model = training_model(side, spec, model, initial, execution)
    classifier = side.classifier.CarvanaClassifier(model, spec.epochs, spec, checkpoint_dir=out_dir / "checkpoint",
                                                   execution=execution)
    train_loader = side.data.make_image_loader(train_set, spec.batch_size, spec.seed, True, spec.workers)
    valid_loader = (side.data.make_image_loader(valid_set, spec.batch_size, spec.seed, False, spec.workers)
                    if valid_set else None)
    preview = preview_samples(spec, probe_set)
    callbacks, saver, submission = unet_callbacks(side, spec, layout, out_dir, model, classifier.predict,
                                                  probe_images, preview)
    history = classifier.train(train_loader, valid_loader, spec.epochs, callbacks)
    result = unet_result(side, spec, out_dir, model, classifier.predict, preview, saver, submission,
                         {"history": history, "batch_losses": classifier.batch_losses, "timing": classifier.timing},
                         has_validation=valid_set is not None)
    return {**result, "traces": getattr(classifier, "traces", None)}, probe


def preview_samples(spec: TaskSpec, probe_set) -> list:
    """Spread over the set, so the preview shows several cars rather than the angles of one."""
    return [probe_set.get(int(i)) for i in np.unique(np.linspace(0, len(probe_set) - 1, spec.preview_images).round())]


def unet_callbacks(side: SimpleNamespace, spec: TaskSpec, layout, out_dir: Path, model, predict,
                   probe_images: np.ndarray, preview: list) -> tuple[list, object, Path | None]:
    """The four callbacks of a U-Net run (TensorBoard scalars and graph, predicted masks, the model, the Kaggle
    submission when there are test photos), the model saver among them, and where the submission goes."""
    tensorboard = out_dir / "tensorboard"
    saver = side.callbacks.ModelSaverCallback(model, out_dir / "model")
    callbacks = [side.callbacks.TensorboardLoggerCallback(tensorboard, model, probe_images[:1]),
                 side.callbacks.TensorboardVisualizerCallback(tensorboard, preview, predict, spec.threshold),
                 saver]
    test_files = carvana.get_test_files(layout) if layout.test_dir is not None else []
    submission = None
    if test_files:
        submission = out_dir / "submit.csv.gz"
        pad = (spec.image_size - spec.output_size) // 2
        test_set = carvana.TestImageDataset(test_files, spec.output_size if pad else spec.image_size)
        callbacks.append(PredictionsSaverCallback(submission, test_set, predict, spec.threshold,
                                                  spec.image_size, spec.output_size, spec.batch_size))
    return callbacks, saver, submission


def unet_result(side: SimpleNamespace, spec: TaskSpec, out_dir: Path, model, predict, preview: list, saver,
                submission: Path | None, run: dict, has_validation: bool) -> dict:
    """The side's results.json entry after training; the preview's predicted masks go to preview.npz."""
    images = np.stack([image for image, _ in preview])
    np.savez_compressed(out_dir / "preview.npz", images=images, masks=np.stack([mask for _, mask in preview]),
                        predicted=predict(images))
    final = run["history"][-1]
    return {
        "history": run["history"],
        "batch_losses": run["batch_losses"],
        "metrics": {**({"val_dice": final["val_dice"], "val_loss": final["val_loss"]} if has_validation else {}),
                    "train_dice": final["dice"], "train_loss": final["loss"],
                    "parameters": side.weights.count_parameters(model)},
        "timing": run["timing"],
        "artifacts": {**saver.save(), "submission": None if submission is None else str(submission),
                      "tensorboard": str(out_dir / "tensorboard"), "preview": str(out_dir / "preview.npz")},
    }


def run_unet_distributed(side: SimpleNamespace, spec: TaskSpec, out_dir: Path, data: dict,
                         context) -> tuple[dict, np.ndarray] | None:
    """The U-Net trained data-parallel by the side's own engine (side.distributed: DDP under torchrun, or
    MultiWorkerMirroredStrategy): every process trains its share of each global batch; the chief (rank 0)
    alone runs the callbacks, writes checkpoints, weights and the submission, and returns the result (None
    on the other ranks)."""
    from shared import distributed

    layout = carvana.resolve_carvana(data["data_dir"])
    train_samples, valid_samples = carvana.get_train_files(layout, spec.sample_size, spec.validation_size, spec.seed)
    pad = (spec.image_size - spec.output_size) // 2
    probe_set = carvana.TrainImageDataset(valid_samples or train_samples, spec.output_size, seed=spec.seed, pad=pad)
    probe_images = np.stack([probe_set.get(i)[0] for i in range(min(spec.batch_size, len(probe_set)))])
    initial = init_weights(weights.unet_layout(spec), spec.seed)
    model = side.task.build(spec)
    side.weights.load_weights(model, initial)
    probe = side.classifier.forward(model, probe_images)
    preview, made = preview_samples(spec, probe_set), {}

    def callbacks(net) -> list:
        """On the chief only: the same callbacks as a one-process run, on the unwrapped U-Net."""
        def predict(images: np.ndarray) -> np.ndarray:
            return metrics.sigmoid(side.classifier.forward(net, images)[..., 0])

        found, made["saver"], made["submission"] = unet_callbacks(side, spec, layout, out_dir, net, predict,
                                                                  probe_images, preview)
        made["net"], made["predict"] = net, predict
        return found

    side.distributed.train(context, spec, data["data_dir"], out_dir, initial, callbacks=callbacks)
    if not distributed.is_chief(context.rank):
        return None
    run = json.loads((out_dir / "history.json").read_text())
    result = unet_result(side, spec, out_dir, made["net"], made["predict"], preview, made["saver"],
                         made["submission"], run, has_validation=bool(valid_samples))
    return {**result, "processes": run["world"]}, probe


def load_classifier_data(spec: TaskSpec, data: dict) -> SimpleNamespace:
    """MNIST normalised the same way for both sides (mean 0.1307, std 0.3081)."""
    loaded = mnist.load_mnist(data.get("data_dir"), seed=spec.seed, sample_size=spec.sample_size)
    return SimpleNamespace(
        train_images=mnist.normalize(loaded.train_images, spec.mean, spec.std), train_labels=loaded.train_labels,
        test_images=mnist.normalize(loaded.test_images, spec.mean, spec.std), test_labels=loaded.test_labels)


LAYOUTS = {"mlp": weights.mlp_layout, "cnn": weights.cnn_layout}


def initial_weights(spec: TaskSpec) -> dict:
    """The canonical starting point both sides load."""
    return init_weights(LAYOUTS[spec.name](spec), spec.seed)


def run_classifier(side: SimpleNamespace, spec: TaskSpec, out_dir: Path, data=None,
                   execution: Execution | None = None) -> tuple[dict, np.ndarray]:
    """Load the canonical initial weights, probe them, train, evaluate, save the checkpoint."""
    dataset = load_classifier_data(spec, data or {})
    model = side.task.build(spec)
    side.weights.load_weights(model, initial_weights(spec))
    probe = side.train.forward(model, dataset.test_images[:spec.batch_size])
    model = training_model(side, spec, model, initial_weights(spec), execution)
    run = side.train.train(model, spec, dataset, verbose=True, checkpoint_dir=out_dir / "checkpoint",
                           execution=execution)
    final = side.train.evaluate(model, dataset.test_images, dataset.test_labels, spec.batch_size)
    checkpoint = weights.save_weights(side.weights.export_weights(model), out_dir / "checkpoint.safetensors")
    result = {
        "history": run["history"],
        "batch_losses": run["batch_losses"],
        "metrics": {"test_accuracy": final["accuracy"], "test_loss": final["loss"],
                    "final_train_loss": run["batch_losses"][-1],
                    "parameters": side.weights.count_parameters(model)},
        "timing": run["timing"],
        "traces": run.get("traces"),
        "confusion_matrix": metrics.confusion_matrix(dataset.test_labels, final["predictions"]).tolist(),
        "artifacts": {"checkpoint": str(checkpoint)},
    }
    return result, probe


def agreement_images(spec: TaskSpec, data: dict) -> np.ndarray:
    """The validation photos (or the first training batch without validation), as the U-Net's input."""
    layout = carvana.resolve_carvana(data["data_dir"], include_test=False)
    train_samples, valid_samples = carvana.get_train_files(layout, spec.sample_size, spec.validation_size, spec.seed)
    samples = valid_samples or train_samples[:spec.batch_size]
    dataset = carvana.TrainImageDataset(samples, spec.output_size, seed=spec.seed,
                                        pad=(spec.image_size - spec.output_size) // 2)
    return np.stack([dataset.get(i)[0] for i in range(len(dataset))])


def predict_with_weights(side: SimpleNamespace, spec: TaskSpec, data: dict, weights_path: Path) -> np.ndarray:
    """Masks this side predicts for the agreement images when it runs the given canonical weights."""
    model = side.task.build(spec)
    side.weights.load_weights(model, weights.load_weights_file(weights_path))
    images = agreement_images(spec, data)
    logits = np.concatenate([side.classifier.forward(model, images[i:i + spec.batch_size])
                             for i in range(0, len(images), spec.batch_size)])
    return (metrics.sigmoid(logits[..., 0]) > spec.threshold).astype(np.uint8)


RUNNERS = {"neuron": run_neuron, "autograd": run_autograd, "mlp": run_classifier, "cnn": run_classifier,
           "unet": run_unet}


def run_task(side: SimpleNamespace, spec: TaskSpec, out_dir: Path, data=None,
             execution: Execution | None = None) -> tuple[dict, np.ndarray]:
    """The side's result (the results.json entry) and its parity probe array. The execution (device,
    precision) applies to the trained tasks; neuron and autograd run in float64/float32 on the CPU."""
    if spec.name in ("neuron", "autograd"):
        return RUNNERS[spec.name](side, spec, Path(out_dir), data)
    return RUNNERS[spec.name](side, spec, Path(out_dir), data, execution)
