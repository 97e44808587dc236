"""The digit classifiers' prediction (mlp, cnn): digit images of any size resampled the MNIST way, or a test set,
read once in the parent into digits.npz; each side writes the classes and log-probabilities it predicts
(<side>/predictions.csv), and the parent checks that the two sides' log-probabilities agree within the task's
tolerance."""
from __future__ import annotations

import csv
import time
from pathlib import Path

import numpy as np
from PIL import Image

from harness.predict.checks import TrainedRun, list_images
from harness.registry import TOLERANCES
from shared.atomic import atomic_path
from shared.data import mnist
from shared.data.carvana.decode import read_photo
from shared.errors import DataError
from shared.tasks import TaskSpec

SIDE, BOX = mnist.IMAGE_SIDE, 20  # MNIST fits each digit into a 20x20 box, centred by its mass in 28x28
INK = 0.1  # the share of full brightness above which a pixel is part of the digit, for its bounding box
DIGITS, PREDICTIONS = "digits.npz", "predictions.csv"


def mnist_way(gray: np.ndarray) -> np.ndarray:
    """A grey (H, W) uint8 digit as MNIST holds one: (28, 28) float32 in [0, 1], white ink on black. Dark ink on
    light paper is inverted first (judged by the border); a 28x28 image is taken as it is, any other size is cropped
    to its ink, fitted into a 20x20 box keeping its aspect ratio (antialiased) and centred by its centre of mass."""
    ink = gray.astype(np.float32) / 255.0
    border = np.concatenate([ink[0], ink[-1], ink[:, 0], ink[:, -1]])
    if border.mean() > 0.5:
        ink = 1.0 - ink
    if ink.shape == (SIDE, SIDE):
        return ink
    rows, cols = np.flatnonzero((ink > INK).any(axis=1)), np.flatnonzero((ink > INK).any(axis=0))
    if not len(rows):
        return np.zeros((SIDE, SIDE), np.float32)  # no ink at all: a blank digit
    ink = ink[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    scale = BOX / max(ink.shape)
    size = (max(1, round(ink.shape[1] * scale)), max(1, round(ink.shape[0] * scale)))  # (w, h)
    boxed = np.clip(np.asarray(Image.fromarray(ink, "F").resize(size, Image.BILINEAR)), 0.0, 1.0)
    mass = boxed.sum()
    cy = (boxed.sum(axis=1) @ np.arange(boxed.shape[0])) / mass if mass > 0 else (boxed.shape[0] - 1) / 2
    cx = (boxed.sum(axis=0) @ np.arange(boxed.shape[1])) / mass if mass > 0 else (boxed.shape[1] - 1) / 2
    centre = (SIDE - 1) / 2.0
    top = int(np.clip(round(centre - cy), 0, SIDE - boxed.shape[0]))
    left = int(np.clip(round(centre - cx), 0, SIDE - boxed.shape[1]))
    canvas = np.zeros((SIDE, SIDE), np.float32)
    canvas[top:top + boxed.shape[0], left:left + boxed.shape[1]] = boxed
    return canvas


def prepare_digits(run: TrainedRun, args) -> dict:
    """The digits both sides classify, read before anything is written: --images (any size), the test set of
    --data-dir, or the run's own test set; with what the report says about them."""
    spec, skipped = run.spec, []
    if args.images is not None:
        names, images = [], []
        for path in list_images(args.images):
            try:
                images.append(mnist_way(read_photo(path, mode="L")[0]))
                names.append(path.name)
            except DataError as error:
                if not args.skip_bad:
                    raise
                skipped.append({"photo": str(path), "error": str(error)})
        if not images:
            raise DataError(args.images[0], "no digit image could be read (--images)")
        images, labels = np.stack(images)[..., None], np.full(len(names), -1)
        source = {"source": "--images", "location": [str(p) for p in args.images],
                  "resize": "the MNIST way: ink fitted into 20x20, centred by mass in 28x28 (28x28 kept as is)"}
    else:
        location = args.data_dir
        if location is None and run.data.get("source") != "sklearn-digits":  # the embedded digits: seeded, rebuilt
            location = run.data.get("location")
            if location is None or not Path(location).exists():
                raise DataError(location or run.folder, "the run's dataset is not there any more: pass --data-dir "
                                                        "or --images")
        loaded = mnist.load_mnist(location, seed=spec.seed)
        images, labels = loaded.test_images, loaded.test_labels
        names = [f"test-{i:05d}" for i in range(len(images))]
        source = {"source": loaded.source, "location": loaded.location, "split": "test"}
    return {"description": {**source, "count": len(names), "skipped": skipped},
            "images": images.astype(np.float32), "names": np.array(names), "labels": labels.astype(np.int64)}


def save_digits(out: Path, found: dict) -> None:
    with atomic_path(out / DIGITS, suffix=".npz") as temporary:
        np.savez(temporary, images=found["images"], names=found["names"], labels=found["labels"])


def predict_digits(surface, spec: TaskSpec, job: dict, out_dir: Path, model_of) -> dict:
    """Classify the digits of digits.npz; <out_dir>/predictions.csv holds image, class, label (when known) and the ten
    log-probabilities, written exactly (float32 to 9 digits)."""
    with np.load(Path(job["out"]) / DIGITS) as saved:
        images, names, labels = saved["images"], saved["names"].tolist(), saved["labels"]
    started = time.perf_counter()
    model = model_of()
    setup_s, clock = time.perf_counter() - started, time.perf_counter()
    normalised = mnist.normalize(images, spec.mean, spec.std)
    log_probabilities = np.concatenate([surface.task.forward(model, normalised[i:i + spec.batch_size])
                                        for i in range(0, len(normalised), spec.batch_size)])
    seconds = time.perf_counter() - clock
    classes = log_probabilities.argmax(axis=1)
    known = labels >= 0
    header = ["image", "class", *(["label"] if known.any() else []),
              *(f"log_p{k}" for k in range(log_probabilities.shape[1]))]
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_dir / PREDICTIONS, suffix=".csv") as temporary:
        with open(temporary, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow(header)
            for name, predicted, label, row in zip(names, classes, labels, log_probabilities):
                writer.writerow([name, int(predicted), *([int(label)] if known.any() else []),
                                 *(f"{value:.9g}" for value in row)])
    result = {"photos": len(names), "rows": len(names), "skipped": job["source"].get("skipped", []),
              "timing": {"photos_per_s": len(names) / seconds if seconds else None, "seconds": seconds,
                         "setup_s": setup_s},
              "artifacts": {"predictions": str(out_dir / PREDICTIONS)}}
    if known.any():
        result["metrics"] = {"test_accuracy": float(np.mean(classes[known] == labels[known]))}
    return result


def read_predictions(path: Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(names, classes, log-probabilities) of a side's predictions.csv."""
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    header, body = rows[0], rows[1:]
    first = header.index("log_p0")
    return ([row[0] for row in body], np.array([int(row[1]) for row in body], np.int64),
            np.array([[float(v) for v in row[first:]] for row in body], np.float64).reshape(len(body), -1))


def digits_agreement(out: Path, sides: list[str], task: str) -> dict:
    """The two sides' log-probabilities compared: their max |difference| against the task's forward tolerance, and
    how many digits both put in the same class."""
    (names, tf_classes, tf_logp), (_, torch_classes, torch_logp) = (read_predictions(out / side / PREDICTIONS)
                                                                    for side in sides)
    diff = float(np.max(np.abs(tf_logp - torch_logp))) if len(names) else 0.0
    tolerance = TOLERANCES[task]["forward"]
    return {"kind": "log-probabilities", "rows": len(names), "max_abs_diff": diff, "tolerance": tolerance,
            "passed": bool(diff <= tolerance), "same_class": int(np.sum(tf_classes == torch_classes))}
