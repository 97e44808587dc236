"""The U-Net's prediction on one side: every photo through the side's own image loader (DataLoader workers, tf.data
map), the mask upsampled to the photo's original size and thresholded as the training run's submission does,
run-length encoded and streamed into the resumable submission (harness/predict/rows.py), and, for your own folder of
images, written as a PNG at the image's size too; overlays for the first photos; photos/s and resident memory measured
on the way."""
from __future__ import annotations

import csv
import io
import resource
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

import numpy as np
import psutil
from PIL import Image
from tqdm.auto import tqdm

from harness.predict.rows import ResumableRows
from harness.report import SIDE_NAMES
from shared.atomic import atomic_path
from shared.callbacks import upsample
from shared.data import folders
from shared.data.carvana.decode import read_photo
from shared.errors import DataError
from shared.rle import rle_encode
from shared.tasks import UNetSpec
from shared.tiles import mirror_pad
from shared.visualize import OVERLAY_COLOR

PREVIEW_SIDE = 480  # the longest side of each of an overlay's three pictures
FACTS = 4  # what travels with each photo through a loader: its number, readable (1) or not (0), width, height


class PhotoDataset:
    """The photos from number `start` on, as the sides' image loaders take a dataset (get(index, epoch) -> a photo
    and its facts). A photo is resized as the training run's test photos are (shared/callbacks.py), with the original
    U-Net's mirrored border, in the run's channels (a grayscale model reads every photo as grayscale). It travels
    flattened: each side's loader moves image axes into its own layout (NCHW for
    PyTorch), and a flat vector has none to move, so a batch comes back in the canonical NHWC by a reshape on either
    side. An unreadable photo raises its DataError, or with skip_bad travels as zeros marked unreadable."""

    def __init__(self, paths: list[str], start: int, spec: UNetSpec, skip_bad: bool):
        self.paths, self.start, self.skip_bad = paths, start, skip_bad
        self.size, self.pad = spec.output_shape[::-1], spec.pad  # PIL's (width, height) the photo is resized to
        self.mode = folders.MODES[spec.in_channels]
        self.shape = (*spec.image_shape, spec.in_channels)  # what the net takes: the photo and its border

    def __len__(self) -> int:
        return len(self.paths) - self.start

    def get(self, index: int, epoch: int = 0) -> tuple[np.ndarray, np.ndarray]:
        number = self.start + index
        try:
            photo, (width, height) = read_photo(self.paths[number], self.size, self.mode)
            readable = 1
        except DataError:
            if not self.skip_bad:
                raise
            photo, width, height, readable = np.zeros((*self.size[::-1], self.shape[-1]), np.uint8), 0, 0, 0
        photo = photo.reshape(*photo.shape[:2], self.shape[-1])  # (H, W) of a grayscale photo -> (H, W, 1)
        image = mirror_pad(photo.astype(np.float32) / 255.0, self.pad)  # (H_in, W_in, C) in [0, 1]
        return image.reshape(1, 1, -1), np.array([number, readable, width, height], np.float32)


def resident_mb() -> float | None:
    """This process's resident memory now, in MB (psutil; None where it cannot be read)."""
    try:
        return psutil.Process().memory_info().rss / 2**20
    except (psutil.Error, OSError):
        return None


class MemoryWatch:
    """Resident memory after the first 100 photos of this process and the most it reached after them: a streamed
    prediction stays flat whatever the number of photos."""

    def __init__(self, after: int = 100):
        self.after, self.seen, self.baseline, self.peak = after, 0, None, None

    def update(self, photos: int) -> None:
        self.seen += photos
        now = resident_mb()
        if now is None or self.seen < self.after:
            return
        self.baseline = now if self.baseline is None else self.baseline
        self.peak = max(self.peak or now, now)

    def result(self) -> dict:
        growth = None if self.baseline is None else self.peak - self.baseline
        return {"rss_mb_after_first_100": self.baseline, "rss_mb_peak_after": self.peak, "growth_mb": growth,
                "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def mask_row(probability: np.ndarray, path: str, size: tuple[int, int], threshold: float,
             overlay: tuple[Path, int] | None, png_folder: Path | None = None) -> tuple[str, str | None]:
    """One photo's submission row: the probabilities upsampled to its original (width, height) and thresholded as
    the training run's submission does (shared/callbacks.py), run-length encoded, quoted as the csv module quotes
    (Kaggle's names need none); its overlay, for the first photos; and the mask as <png_folder>/<stem>.png (0/255),
    written before its row counts, so a resumed run writes it again. Runs in the encoding threads."""
    mask = upsample(probability, size) > threshold
    if png_folder is not None:
        write_mask_png(png_folder / f"{Path(path).stem}.png", mask)
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow((Path(path).name, rle_encode(mask)))
    return buffer.getvalue(), None if overlay is None else str(write_overlay(*overlay, path, mask))


def why_unreadable(path: str) -> str:
    """The one-line DataError a photo gives (it is read again in this process: a loader worker's copy is gone)."""
    try:
        read_photo(path)
    except DataError as error:
        return str(error)
    return f"{path}: could not be read"


class Batch(NamedTuple):
    """One batch between the net and the file: its rows being encoded (futures, in photo order), what it skipped."""

    rows: list[Future]
    skipped: list[dict]
    next_photo: int  # the first photo after it
    photos: int
    predict_s: float


def predict_masks(surface, spec: UNetSpec, job: dict, out_dir: Path, model_of) -> dict:
    """Predict every photo of job["photos"] not yet in the side's submission; model_of() builds the model (only when
    photos are left). Returns the side's result entry."""
    return MaskStream(surface, spec, job, out_dir).run(model_of)


class MaskStream:
    """One side's photos through its loader and net into the submission, batch by batch: the net predicts a batch,
    then threads encode its photos (upsampling to 1918x1280 and run-length encoding cost more than the default net)
    and its rows are written, in photo order."""

    def __init__(self, surface, spec: UNetSpec, job: dict, out_dir: Path):
        self.surface, self.spec, self.job, self.out_dir = surface, spec, job, out_dir
        self.paths = Path(job["photos"]).read_text().splitlines()
        self.memory, self.side = MemoryWatch(), SIDE_NAMES[surface.side]
        self.previews = [str(p) for p in (out_dir / "preview").glob("*.png")]
        # Your own folder's masks as PNG files too, beside the run-length CSV.
        self.png_folder = out_dir / "masks" if job["source"].get("source") == folders.SOURCE_NAME else None
        self.rows = self.bar = None
        self.clock = time.perf_counter()

    def run(self, model_of) -> dict:
        self.rows = rows = ResumableRows(self.out_dir)
        setup_s = 0.0
        try:
            if rows.start < len(self.paths):
                started = time.perf_counter()
                model = model_of()
                dataset = PhotoDataset(self.paths, rows.start, self.spec, self.job["skip_bad"])
                loader = self.surface.task.make_loader(dataset, self.spec.batch_size, self.spec.seed, False,
                                                       self.spec.workers)
                setup_s = time.perf_counter() - started
                if rows.start:
                    print(f"{self.side}: continuing after photo {rows.start:,} of {len(self.paths):,}", flush=True)
                self.bar = tqdm(total=len(self.paths), initial=rows.start, unit=" photos", file=sys.stderr,
                                desc=f"{self.side} predicting", dynamic_ncols=True, disable=None, smoothing=0.1)
                with ThreadPoolExecutor(max(1, self.job["threads"]), thread_name_prefix="encode") as pool:
                    try:
                        self.stream(model, loader, dataset, pool)
                    except DataError as error:  # a photo that cannot be read: the rows before it are kept
                        rows.sync()
                        raise DataError(error.path, f"{error.problem} (--skip-bad skips and lists such photos)") \
                            from None
                    except BaseException:  # Ctrl-C: likewise
                        rows.sync()
                        raise
                self.bar.close()
            submission = rows.finish(self.out_dir / "submit.csv.gz")
        finally:
            rows.close()
        state = rows.state
        done = state["rows"] + len(state["skipped"])
        return {
            "photos": len(self.paths), "rows": state["rows"], "skipped": state["skipped"], "resumed": state["resumed"],
            "timing": {"photos_per_s": done / state["seconds"] if state["seconds"] else None,
                       "model_photos_per_s": done / state["predict_seconds"] if state["predict_seconds"] else None,
                       "seconds": state["seconds"], "predict_seconds": state["predict_seconds"],
                       "first_batch_s": state["first_batch_s"], "setup_s": setup_s},
            "memory": self.memory.result(),
            "artifacts": {"submission": str(submission), "previews": sorted(set(self.previews)),
                          **({"masks": str(self.png_folder)} if self.png_folder else {})},
        }

    def stream(self, model, loader, dataset: PhotoDataset, pool: ThreadPoolExecutor) -> None:
        """The loader's batches through the net; each batch's rows to the encoding threads."""
        paths, preview, threshold = self.paths, self.job["preview"], self.spec.threshold
        self.clock = time.perf_counter()
        # The twinned way to walk one epoch of a side's loader (what the benchmark's pipeline row reads).
        for images, facts in self.surface.module("benchmark").loader_batches(loader, 0):
            images, facts = np.asarray(images).reshape(-1, *dataset.shape), np.asarray(facts).reshape(-1, FACTS)
            predicted = time.perf_counter()
            probabilities = self.surface.task.predict(model, images)  # (N, H_out, W_out)
            predict_s = time.perf_counter() - predicted
            self.rows.note_first_batch(time.perf_counter() - self.clock)  # kept from the first batch ever: warm-up
            futures, skipped = [], []
            for (number, readable, width, height), probability in zip(facts.astype(np.int64), probabilities):
                if not readable:
                    skipped.append({"photo": paths[number], "error": why_unreadable(paths[number])})
                    continue
                overlay = (self.out_dir / "preview", int(number)) if number < preview else None
                futures.append(pool.submit(mask_row, probability, paths[number], (int(width), int(height)),
                                           threshold, overlay, self.png_folder))
            # Written before the next batch is predicted: encoding threads that overlapped the net would take the
            # cores its own threads wait for at every op (PyTorch's slow down many times over on 2 cores).
            self.write(Batch(futures, skipped, int(facts[-1, 0]) + 1, len(facts), predict_s))

    def write(self, batch: Batch) -> None:
        """A batch's rows, in photo order, then the progress that counts them."""
        encoded = [future.result() for future in batch.rows]
        self.previews.extend(preview for _, preview in encoded if preview is not None)
        now = time.perf_counter()
        self.rows.add([row for row, _ in encoded], batch.next_photo, batch.skipped, now - self.clock,
                      batch.predict_s)
        self.clock = now
        self.memory.update(batch.photos)
        self.bar.update(batch.photos)


def write_overlay(folder: Path, number: int, path: str, mask: np.ndarray) -> Path:
    """photo | mask | photo with the mask tinted and outlined, each at most PREVIEW_SIDE pixels: a PNG per photo."""
    photo, _ = read_photo(path)
    height, width = mask.shape
    scale = min(1.0, PREVIEW_SIDE / max(height, width))
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    small_photo = np.asarray(Image.fromarray(photo).resize(size, Image.BILINEAR), np.float32) / 255.0
    small_mask = np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize(size, Image.NEAREST)) > 127
    tinted = np.where(small_mask[..., None], 0.6 * small_photo + 0.4 * OVERLAY_COLOR, small_photo)
    tinted[outline(small_mask)] = OVERLAY_COLOR
    panels = [small_photo, np.repeat(small_mask[..., None], 3, -1).astype(np.float32), tinted]
    picture = (np.concatenate(panels, axis=1) * 255).round().astype(np.uint8)
    target = folder / f"{number:03d}-{Path(path).stem}.png"
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_path(target, suffix=".png") as temporary:
        Image.fromarray(picture).save(temporary)
    return target


def write_mask_png(target: Path, mask: np.ndarray) -> Path:
    """A predicted mask at its image's size as an 8-bit PNG, 255 foreground and 0 background, written atomically."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(target, suffix=".png") as temporary:
        Image.fromarray(mask.astype(np.uint8) * 255, "L").save(temporary, "PNG")
    return target


def outline(mask: np.ndarray) -> np.ndarray:
    """The mask's border pixels (inside, next to outside), two pixels thick."""
    padded = np.pad(mask, 1, mode="edge")
    inner = (padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]) & mask
    edge = mask & ~inner
    grown = np.pad(edge, 1)
    return edge | grown[:-2, 1:-1] | grown[2:, 1:-1] | grown[1:-1, :-2] | grown[1:-1, 2:]
