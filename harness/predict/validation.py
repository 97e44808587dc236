"""The run's own validation batch, which `--export RUN_DIR` verifies every exported file on: the data found where
the run read it (results.json "data": the embedded set, generated again if its cache is gone; a --data-dir; your own
folder set), or at --data-dir when the folder moved; split as the run split it (harness/tasks/); the first batch its
validation loader read (unshuffled), cut to VERIFY_BATCH images. A data folder that is gone is one line naming it."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from harness.predict.checks import TrainedRun
from harness.tasks.unet import make_split
from shared.data import mnist, synthetic_cars
from shared.errors import DataError
from shared.tasks import TaskSpec, shape_text

VERIFY_BATCH = 8  # at most this many images of the run's first validation batch (the U-Net's default batch is 8)
EMBEDDED_DIGITS = "sklearn-digits"  # results.json data.source of the digits that ship inside scikit-learn


@dataclass(frozen=True)
class ValidationBatch:
    """Canonical NHWC images as the run's validation loader handed them to the model, and what they are."""

    images: np.ndarray  # (N, H, W, C) float32
    record: dict  # export.json "validation_batch": split, images, names, source, location, found

    @property
    def text(self) -> str:
        """export.json "verified_on", and the export's closing line."""
        found = self.record
        return (f"the run's validation batch: {found['images']} {found['what']} ({found['split']}) of "
                f"{found['source']} from {found['location']} ({found['found']})")


def validation_batch(run: TrainedRun, spec: TaskSpec, prediction: str, data_dir: Path | None) -> ValidationBatch:
    """The first validation batch of the run's data, at the export's input size (spec: the run's, or its
    --image-size); prediction is the task's kind (harness/registry.py Task.prediction): "masks" or "classes"."""
    return {"masks": photos_batch, "classes": digits_batch}[prediction](run, spec, data_dir)


def batch_size(run: TrainedRun, available: int) -> int:
    """The run's own batch size (not a --batch-size of the export), cut to VERIFY_BATCH and to what the set holds."""
    return min(VERIFY_BATCH, run.spec.batch_size, available)


def data_folder(run: TrainedRun, data_dir: Path | None, embedded) -> tuple[Path | None, str]:
    """Where the run's data is now, and how it was found: --data-dir (the run's data at a new place), the place the run
    recorded, or the embedded set made again (embedded() -> its folder, or None for data with no folder)."""
    if data_dir is not None:
        if not data_dir.exists():
            raise DataError(data_dir, "no such folder (--data-dir)")
        return data_dir, "--data-dir"
    location = run.data.get("location")
    if run.data.get("source") in (synthetic_cars.SOURCE_NAME, EMBEDDED_DIGITS):
        if location and Path(location).exists():
            return Path(location), "where the run read it"
        return embedded(), "the embedded set, made again as the run made it"
    if location and Path(location).exists():
        return Path(location), "where the run read it"
    where = Path(location) if location else run.folder / "results.json"
    why = "is not there any more (moved or deleted)" if location else "is not recorded in this run"
    raise DataError(where, f"the run's data folder {why}: pass its new place with --data-dir to verify the export on "
                           "the run's validation batch")


def check_same_data(data_dir: Path | None, recorded: dict, found: dict) -> None:
    """With --data-dir, the split must hold as many images as the run recorded: another folder is refused."""
    differ = {key: (found[key], recorded[key]) for key in found if isinstance(recorded.get(key), int)
              and recorded[key] != found[key]}
    if data_dir is not None and differ:
        said = ", ".join(f"{now} {key} images where the run had {then}" for key, (now, then) in differ.items())
        raise DataError(data_dir, f"not the data this run trained on: {said} (--data-dir)")


def photos_batch(run: TrainedRun, spec: TaskSpec, data_dir: Path | None) -> ValidationBatch:
    """The U-Net's: the run's split of its photos (by car, by file or group), its validation photos (the training ones
    when it held none out, as its probe does), resized and mirror-padded as the run's validation loader reads them."""
    folder, found = data_folder(run, data_dir, lambda: synthetic_cars.synthetic_carvana(
        n_cars=spec.synthetic_cars, n_test_cars=spec.synthetic_test_cars, seed=spec.seed))
    split = make_split(spec, str(folder))
    check_same_data(data_dir, run.data, {"train": len(split.train), "valid": len(split.valid)})
    samples, which = (split.valid, "validation photos") if split.valid else (
        split.train, "training photos: the run held out no validation photos")
    dataset = split.dataset(samples)  # not augmented
    count = batch_size(run, len(dataset))
    images = np.stack([dataset.get(index)[0] for index in range(count)])  # (N, H, W, C)
    return ValidationBatch(images, {
        "split": f"the first of its {len(samples)} {which}", "images": count,
        "what": f"{shape_text(spec.image_shape)} images", "names": [sample.name for sample in samples[:count]],
        "source": run.data.get("source", "carvana"), "location": str(folder), "found": found})


def digits_batch(run: TrainedRun, spec: TaskSpec, data_dir: Path | None) -> ValidationBatch:
    """mlp's and cnn's: their test digits, the set the run evaluated after every epoch, normalised as it did."""
    folder, found = data_folder(run, data_dir, lambda: None)  # the embedded digits: scikit-learn's, seeded
    loaded = mnist.load_mnist(folder, seed=spec.seed)
    check_same_data(data_dir, run.data, {"test": len(loaded.test_images)})
    count = batch_size(run, len(loaded.test_images))
    images = mnist.normalize(loaded.test_images[:count], spec.mean, spec.std)  # (N, 28, 28, 1)
    return ValidationBatch(images, {
        "split": f"the first of its {len(loaded.test_images)} test digits, which the run validated on after every "
                 "epoch", "images": count, "what": "digits", "names": [f"test-{i:05d}" for i in range(count)],
        "source": loaded.source, "location": loaded.location, "found": found})
