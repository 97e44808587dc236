"""The U-Net on one side: the Carvana files (or your own folder set) checked once, the split by car (by file or
group), the probe, the four callbacks, training in one process or data-parallel, and the mask agreement of the two
sides' predictions."""
from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Callable

import numpy as np

from harness.drift import DriftRecorder
from harness.original_dice import original_size_dice
from harness.surface import Surface
from harness.tasks.folder_set import prepare_folder
from shared import distributed
from shared.callbacks import BestModelSaverCallback, PredictionsSaverCallback, best_model_entry
from shared.data import carvana, folders, synthetic_cars
from shared.execution import Execution
from shared.loaders import Loaders
from shared.rle import read_rle_csv
from shared.tasks import UNetSpec, normalize_image_size
from shared.weights import Weights, load_weights_file


def prepare_carvana(spec: UNetSpec, data_dir: Path | None, download: bool) -> dict:
    """The real Carvana files (a folder, its zips, or a download), your own folder of images/ and masks/, or the
    generated synthetic-carvana set, checked once in the parent before any side starts; the result (plain JSON) tells
    each side where to load them from."""
    found = folders.survey(data_dir, spec.split_by) if data_dir is not None and not download else None
    if found is not None:
        return {"data_dir": str(data_dir), "description": prepare_folder(spec, found)}
    if download:
        data_dir = carvana.DatasetFetcher().download_dataset(carvana.default_download_dir())
    if data_dir is None:
        data_dir = synthetic_cars.synthetic_carvana(n_cars=spec.synthetic_cars, n_test_cars=spec.synthetic_test_cars,
                                                    seed=spec.seed)
        source = synthetic_cars.SOURCE_NAME
    else:
        source = "carvana"
    split = CarvanaSplit(spec, str(data_dir))
    carvana.check_pair_sizes(split.train + split.valid)
    if split.layout.masks_csv is not None:
        read_rle_csv(split.layout.masks_csv)  # a broken row fails here, in one line naming the file and the row
    carvana.read_pair(split.train[0])  # fail early, in one line, on an unreadable first pair
    description = {"source": source, "location": str(split.layout.root), "train": len(split.train),
                   "valid": len(split.valid), "test": len(split.test),
                   "cars": len({sample.car for sample in split.train + split.valid}),
                   "image_size": spec.image_size, "mask_size": normalize_image_size(spec.output_shape),
                   "resize": carvana.resize_description(carvana.original_size(split.train[0].image),
                                                        spec.output_shape, spec.pad)}
    return {"data_dir": str(data_dir), "description": description}


@functools.lru_cache(maxsize=1)
def split_of(spec: UNetSpec, data_dir: str) -> "CarvanaSplit":
    """The split of this process's runs: a side and its control read the same photos, decoded once."""
    return make_split(spec, data_dir)


def make_split(spec: UNetSpec, data_dir: str) -> "CarvanaSplit":
    """A folder set's split, or Carvana's (its own layout, or the embedded synthetic set)."""
    return FolderSplit(spec, data_dir) if folders.find_folder_set(data_dir) else CarvanaSplit(spec, data_dir)


class CarvanaSplit:
    """The photos of one run: training and validation split by car (the spec's share and seed), the test photos,
    and the datasets the U-Net reads (resized; mirror-padded for the original net; training ones augmented)."""

    def __init__(self, spec: UNetSpec, data_dir: str):
        self.spec = spec
        self.layout = carvana.resolve_carvana(data_dir)
        self.train, self.valid = carvana.get_train_files(self.layout, spec.sample_size, spec.validation_size,
                                                         spec.seed)
        self.test = carvana.get_test_files(self.layout) if self.layout.test_dir is not None else []
        self.datasets: dict[tuple, carvana.TrainImageDataset] = {}

    def dataset(self, samples: list, augment: bool = False) -> carvana.TrainImageDataset:
        """One dataset per photo set, so its cache of decoded photos serves every run of this process."""
        key = (tuple(samples), augment)
        if key not in self.datasets:
            self.datasets[key] = self.make_dataset(samples, augment)
        return self.datasets[key]

    def make_dataset(self, samples: list, augment: bool) -> carvana.TrainImageDataset:
        return carvana.TrainImageDataset(samples, self.spec.output_shape, augment=augment, seed=self.spec.seed,
                                         pad=self.spec.pad)

    def train_set(self) -> carvana.TrainImageDataset:
        return self.dataset(self.train, augment=self.spec.augment)

    def probe_set(self) -> carvana.TrainImageDataset:
        """The validation photos, or the training ones (not augmented) when nothing is held out."""
        return self.dataset(self.valid or self.train)

    def probe_images(self) -> np.ndarray:
        """The first batch of the probe set: the initial model's output on it is the parity probe."""
        probe_set = self.probe_set()
        return np.stack([probe_set.get(i)[0] for i in range(min(self.spec.batch_size, len(probe_set)))])

    def preview(self) -> list:
        """Spread over the probe set, so the preview shows several cars rather than the angles of one."""
        probe_set = self.probe_set()
        picks = np.unique(np.linspace(0, len(probe_set) - 1, self.spec.preview_images).round())
        return [probe_set.get(int(i)) for i in picks]


class FolderSplit(CarvanaSplit):
    """CarvanaSplit's twin for your own folder of images/ and masks/: split by file, or by the group --split-by finds
    in a file name; no test photos; each image read in the spec's channels, from its own size."""

    def __init__(self, spec: UNetSpec, data_dir: str):
        self.spec = spec
        self.layout, self.train, self.valid = folders.folder_split(spec, data_dir)
        self.test: list = []
        self.datasets: dict[tuple, carvana.TrainImageDataset] = {}

    def make_dataset(self, samples: list, augment: bool) -> folders.FolderDataset:
        return folders.folder_dataset(self.spec, samples, augment)


def train_photos(spec: UNetSpec, data: dict) -> tuple[carvana.TrainImageDataset, str]:
    """What the benchmark's pipeline row loads: the augmented training photos, and what an epoch of them is."""
    train_set = make_split(spec, data["data_dir"]).train_set()
    return train_set, f"{len(train_set)} photos decoded, resized and augmented per epoch"


def unet_callbacks(surface: Surface, spec: UNetSpec, split: CarvanaSplit, out_dir: Path, model,
                   predict: Callable[[np.ndarray], np.ndarray]) -> tuple[list, object, Path | None]:
    """The four callbacks of a U-Net run (TensorBoard scalars and graph, predicted masks, the model, the Kaggle
    submission when there are test photos), the model saver among them, and where the submission goes."""
    callbacks_module, tensorboard = surface.module("callbacks"), out_dir / "tensorboard"
    saver = callbacks_module.ModelSaverCallback(model, out_dir / "model")
    callbacks = [callbacks_module.TensorboardLoggerCallback(tensorboard, model, split.probe_images()[:1]),
                 callbacks_module.TensorboardVisualizerCallback(tensorboard, split.preview(), predict, spec.threshold),
                 saver]
    if spec.save_best:  # best.keras / best.pt and best.safetensors beside model.*
        callbacks.append(BestModelSaverCallback(callbacks_module.ModelSaverCallback(model, out_dir / "best"),
                                                spec.save_best))
    submission = None
    if split.test:
        submission = out_dir / "submit.csv.gz"
        test_set = carvana.TestImageDataset(split.test, spec.output_shape)
        callbacks.append(PredictionsSaverCallback(submission, test_set, predict, spec.threshold,
                                                  spec.image_shape, spec.output_shape, spec.batch_size))
    return callbacks, saver, submission


def unet_result(surface: Surface, spec: UNetSpec, split: CarvanaSplit, out_dir: Path, model, saver,
                submission: Path | None, run: dict) -> dict:
    """The side's results.json entry after training; the preview's predicted masks go to preview.npz."""
    preview = split.preview()
    images = np.stack([image for image, _ in preview])
    np.savez_compressed(out_dir / "preview.npz", images=np.repeat(images, 3 // images.shape[-1], -1),  # shown in RGB
                        masks=np.stack([mask for _, mask in preview]), predicted=surface.task.predict(model, images))
    final, best = run["history"][-1], best_model_entry(out_dir / "best")
    validated = {}
    if split.valid:  # Kaggle's metric, at the photos' original size, is computed once, at the end (not every epoch)
        valid_set = split.dataset(split.valid)
        original = original_size_dice(valid_set, lambda images: surface.task.predict(model, images), spec.threshold,
                                      spec.batch_size)
        validated = {"val_dice": final["val_dice"], "val_dice_original": original, "val_loss": final["val_loss"],
                     # what predicting every pixel foreground scores: the model must beat it (docs/data.md)
                     "val_dice_all_foreground": folders.all_foreground_dice(valid_set.decode_all())}
    return {
        "history": run["history"],
        "batch_losses": run["batch_losses"],
        "batch_lrs": run.get("batch_lrs"),  # the learning rate of every step
        "metrics": {**validated, "train_dice": final["dice"], "train_loss": final["loss"],
                    "parameters": surface.task.count_parameters(model),
                    **({"best_epoch": best["best"]["epoch"]} if best else {})},
        **({"best": best["best"]} if best else {}),
        "timing": run["timing"],
        "traces": run.get("traces"),
        "graph": {"traces": run.get("traces"), "graph_ops": run.get("graph_ops"),
                  "autograd_nodes": run.get("autograd_nodes")},
        **({"engine": run["engine"]} if run.get("engine") else {}),  # a Keras arm's: what its engine made of the step
        "artifacts": {**saver.save(), "submission": None if submission is None else str(submission),
                      "tensorboard": str(out_dir / "tensorboard"), "preview": str(out_dir / "preview.npz"),
                      **best.get("best_artifacts", {})},
    }


def run_unet(surface: Surface, spec: UNetSpec, initial: Weights, out_dir: Path, data: dict,
             execution: Execution | None = None, control: bool = False) -> tuple[dict, np.ndarray]:
    """Train the U-Net with the four callbacks, from the canonical initial weights, recording the weights' drift;
    the probe is the initial model's logits on the first validation (or training) batch. A control run records
    its drift and metrics only (no TensorBoard, saved model or submission)."""
    task, split = surface.task, split_of(spec, data["data_dir"])
    model = task.build(spec)
    task.load_weights(model, initial)
    probe = task.forward(model, split.probe_images())
    model = surface.training_model(spec, model, initial, execution)
    loaders = Loaders(task.make_loader(split.train_set(), spec.batch_size, spec.seed, True, spec.workers),
                      task.make_loader(split.dataset(split.valid), spec.batch_size, spec.seed, False, spec.workers)
                      if split.valid else None)
    recorder = DriftRecorder(lambda: task.export_weights(model), out_dir / "drift.npz")
    if control:
        run = task.train(model, spec, loaders, [recorder], out_dir / "checkpoint", execution)
        return control_result(surface, split, model, run), probe
    callbacks, saver, submission = unet_callbacks(surface, spec, split, out_dir, model,
                                                  lambda images: task.predict(model, images))
    run = task.train(model, spec, loaders, [*callbacks, recorder], out_dir / "checkpoint", execution)
    return unet_result(surface, spec, split, out_dir, model, saver, submission, run), probe


def control_result(surface: Surface, split: CarvanaSplit, model, run: dict) -> dict:
    """A control run's entry: its curves and final metrics, to set the two frameworks' difference against."""
    final = run["history"][-1]
    validated = {"val_dice": final["val_dice"], "val_loss": final["val_loss"]} if split.valid else {}
    return {"history": run["history"], "batch_losses": run["batch_losses"], "timing": run["timing"],
            "metrics": {**validated, "train_dice": final["dice"], "train_loss": final["loss"],
                        "parameters": surface.task.count_parameters(model)}, "artifacts": {}}


class ChiefCallbacks:
    """The callbacks of a data-parallel run, made on the chief alone (the engine calls this with the unwrapped
    U-Net); it keeps the model, the saver and the submission path for the result entry."""

    def __init__(self, surface: Surface, spec: UNetSpec, split: CarvanaSplit, out_dir: Path):
        self.surface, self.spec, self.split, self.out_dir = surface, spec, split, out_dir
        self.model = self.saver = self.submission = None

    def __call__(self, model) -> list:
        self.model = model
        callbacks, self.saver, self.submission = unet_callbacks(
            self.surface, self.spec, self.split, self.out_dir, model,
            lambda images: self.surface.task.predict(model, images))
        return callbacks


def run_unet_distributed(surface: Surface, spec: UNetSpec, initial: Weights, out_dir: Path, data: dict,
                         context) -> tuple[dict, np.ndarray] | None:
    """The U-Net trained data-parallel by the side's own engine (DDP under torchrun, or
    MultiWorkerMirroredStrategy): every process trains its share of each global batch; the chief (rank 0)
    alone runs the callbacks, writes checkpoints, weights and the submission, and returns the result (None
    on the other ranks)."""
    task, split = surface.task, make_split(spec, data["data_dir"])
    model = task.build(spec)
    task.load_weights(model, initial)
    probe = task.forward(model, split.probe_images())
    chief = ChiefCallbacks(surface, spec, split, out_dir)
    surface.module("distributed").train(context, spec, data["data_dir"], out_dir, initial, callbacks=chief)
    if not distributed.is_chief(context.rank):
        return None
    run = json.loads((out_dir / "history.json").read_text())
    result = unet_result(surface, spec, split, out_dir, chief.model, chief.saver, chief.submission, run)
    return {**result, "processes": run["world"]}, probe


def agreement_masks(surface: Surface, spec: UNetSpec, data: dict, weights_path: Path) -> np.ndarray:
    """The masks this side predicts for the validation photos (or the first training batch without validation)
    when it runs the given canonical weights: the two sides' masks are compared pixel by pixel."""
    split = split_of(spec, data["data_dir"])
    samples = split.valid or split.train[:spec.batch_size]
    dataset = split.dataset(samples)
    images = np.stack([dataset.get(i)[0] for i in range(len(dataset))])
    model = surface.task.build(spec)
    surface.task.load_weights(model, load_weights_file(weights_path))
    probabilities = np.concatenate([surface.task.predict(model, images[i:i + spec.batch_size])
                                    for i in range(0, len(images), spec.batch_size)])
    return (probabilities > spec.threshold).astype(np.uint8)
