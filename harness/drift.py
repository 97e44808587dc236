"""Equal up to rounding? How far two training runs drift apart, step by step, against each framework's own
rounding noise: a control run of each side from initial weights moved by one unit in the last place (or with one
thread), the drift of the batch losses and of the whole weight vector for three pairs, and a verdict that compares
the curves robustly (divergence horizons and the median ratio), never point by point."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from shared.atomic import atomic_path
from shared.callbacks import Callback
from shared.plotting import pyplot, save_figure
from shared.weights import Weights

CONTROLS = ("ulp", "threads", "none")
FIRST_STEPS = 50  # the weights are recorded after every one of the first steps, then after every epoch
SKETCH_SIZE = 1 << 16  # weight vectors longer than this are compared through a count sketch of this many buckets
HORIZON = 1e-3  # a pair has diverged once its weights are this far apart (relative L2 distance)
RATIO_LIMIT = 10.0  # cross-framework drift within this factor of the larger control's counts as rounding
PAIRS = {"tf-torch": ("tf", "torch"), "tf-control": ("tf", "tf-control"), "torch-control": ("torch", "torch-control")}
PAIR_NAMES = {"tf-torch": "TensorFlow vs PyTorch", "tf-control": "TensorFlow vs its control",
              "torch-control": "PyTorch vs its control"}


def perturb_ulp(weights: Weights) -> Weights:
    """Every float32 value moved one unit in the last place toward +inf: the smallest change float32 can express."""
    return {name: np.nextafter(np.asarray(value, np.float32), np.float32(np.inf)) for name, value in weights.items()}


def flat_weights(weights: Weights) -> np.ndarray:
    """The whole canonical weight vector (every tensor, BatchNorm statistics included), in sorted-name order."""
    return np.concatenate([np.asarray(weights[name], np.float64).ravel() for name in sorted(weights)])


class WeightSketch:
    """A linear map of the weight vector to at most SKETCH_SIZE numbers whose differences keep the L2 distance:
    the identity for a small net (exact), a count sketch for a larger one (each weight added with a random sign
    to one random bucket; the distance of two sketches estimates the weights' distance, relative error about
    sqrt(2 / SKETCH_SIZE) = 0.6%). Seeded by the vector's length only, so both sides and every run agree."""

    def __init__(self, length: int):
        self.length, self.exact = length, length <= SKETCH_SIZE
        if not self.exact:
            rng = np.random.default_rng([length, 12])
            self.buckets = rng.integers(0, SKETCH_SIZE, length)
            self.signs = rng.choice(np.array([-1.0, 1.0]), length)

    def __call__(self, vector: np.ndarray) -> np.ndarray:
        if self.exact:
            return vector.astype(np.float64)
        return np.bincount(self.buckets, weights=self.signs * vector, minlength=SKETCH_SIZE)


class DriftRecorder(Callback):
    """Records the weight vector's sketch before training, after each of the first FIRST_STEPS steps and after
    every epoch, and keeps drift.npz (steps, sketches) up to date after every epoch. A resumed run picks the
    record up where its checkpoint left it, so its drift is an uninterrupted run's. export() gives the canonical
    weights."""

    def __init__(self, export, path: Path):
        self.export, self.path = export, Path(path)
        self.steps: list[int] = []
        self.sketches: list[np.ndarray] = []
        self.step = 0
        self.sketch: WeightSketch | None = None

    def record(self) -> None:
        if self.step in self.steps:
            return  # an epoch's last step may be among the first ones; a resumed run replays recorded steps
        while self.steps and self.steps[-1] > self.step:  # recorded after the checkpoint the run resumed from
            self.steps.pop()
            self.sketches.pop()
        vector = flat_weights(self.export())
        self.sketch = self.sketch or WeightSketch(len(vector))
        self.steps.append(self.step)
        self.sketches.append(self.sketch(vector))

    def save(self) -> None:
        with atomic_path(self.path, suffix=".npz") as temporary:
            np.savez(temporary, steps=np.asarray(self.steps), sketches=np.stack(self.sketches),
                     exact=self.sketch is None or self.sketch.exact)

    def on_train_begin(self, logs=None):
        if self.path.is_file():  # a resumed run: the steps recorded before it was stopped
            with np.load(self.path) as saved:
                self.steps, self.sketches = [int(step) for step in saved["steps"]], list(saved["sketches"])
        self.record()

    def on_batch_end(self, step, logs=None):
        self.step = step
        if step <= FIRST_STEPS:
            self.record()

    def on_epoch_end(self, epoch, logs=None):
        self.record()
        self.save()

    def on_train_end(self, logs=None):
        self.record()
        self.save()


def loss_drift(a: list[float], b: list[float]) -> np.ndarray:
    """|a - b| / |b| of two runs' batch losses, step by step."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    n = min(len(a), len(b))
    return np.abs(a[:n] - b[:n]) / np.maximum(np.abs(b[:n]), 1e-30)


def weight_drift(a: dict, b: dict) -> tuple[np.ndarray, np.ndarray]:
    """The steps both runs recorded, and ||a - b|| / ||b|| of their weight vectors there."""
    steps, in_a, in_b = np.intersect1d(a["steps"], b["steps"], return_indices=True)
    difference = np.linalg.norm(a["sketches"][in_a] - b["sketches"][in_b], axis=1)
    return steps, difference / np.maximum(np.linalg.norm(b["sketches"][in_b], axis=1), 1e-30)


def horizon(steps: np.ndarray, distance: np.ndarray) -> int | None:
    """The first step at which the weights are HORIZON apart (None: never in this run)."""
    beyond = np.nonzero(distance > HORIZON)[0]
    return int(steps[beyond[0]]) if beyond.size else None


def measure(runs: dict[str, dict]) -> dict:
    """The three pairs' curves, horizons and the verdict. runs: name -> {"batch_losses", "steps", "sketches"}."""
    pairs = {}
    for pair, (a, b) in PAIRS.items():
        if a in runs and b in runs:
            steps, distance = weight_drift(runs[a], runs[b])
            pairs[pair] = {"loss": loss_drift(runs[a]["batch_losses"], runs[b]["batch_losses"]).tolist(),
                           "weight_steps": steps.tolist(), "weights": distance.tolist(),
                           "horizon": horizon(steps, distance)}
    return {"pairs": pairs, "verdict": verdict(pairs), "horizon_threshold": HORIZON, "ratio_limit": RATIO_LIMIT,
            "first_steps": FIRST_STEPS}


def verdict(pairs: dict) -> dict:
    """Cross-framework weight drift against the larger control's, at the steps all three recorded: the median of
    their ratio over the run, the first step whose ratio exceeds RATIO_LIMIT while the ratio's median over the rest
    of the run does too (a lasting excess, not one noisy point), and the divergence horizons."""
    if not {"tf-torch", "tf-control", "torch-control"} <= set(pairs):
        return {"within_noise": None, "sentence": "No control was run (--control none): the drift of the two "
                                                  "frameworks has nothing to be compared with."}
    cross = dict(zip(pairs["tf-torch"]["weight_steps"], pairs["tf-torch"]["weights"]))
    controls = [dict(zip(pairs[p]["weight_steps"], pairs[p]["weights"])) for p in ("tf-control", "torch-control")]
    steps = [s for s in sorted(cross) if s > 0 and all(s in c for c in controls)]
    floor = np.array([max(c[s] for c in controls) for s in steps])
    ratio = np.array([cross[s] for s in steps]) / np.maximum(floor, 1e-30)
    if not ratio.size:
        return {"within_noise": None, "median_ratio": None, "steps_compared": 0,
                "sentence": "The runs recorded no step after the first in common: no verdict."}
    median_ratio = float(np.median(ratio))
    exceeds_from = next((steps[i] for i in range(len(steps))
                         if ratio[i] > RATIO_LIMIT and np.median(ratio[i:]) > RATIO_LIMIT), None)
    within = exceeds_from is None
    horizons = {pair: pairs[pair]["horizon"] for pair in PAIRS}
    sentence = (
        (f"TensorFlow and PyTorch drift apart no more than each framework drifts from itself: the median ratio of "
         f"their weight distance to the larger control's is {median_ratio:.2g} (limit {RATIO_LIMIT:g})"
         if within else
         f"TensorFlow and PyTorch drift apart more than rounding explains from step {exceeds_from} on: the median "
         f"ratio of their weight distance to the larger control's is {median_ratio:.2g} (limit {RATIO_LIMIT:g})")
        + f"; divergence horizon (weights {HORIZON:g} apart): " + ", ".join(
            f"{'not reached' if horizons[pair] is None else f'step {horizons[pair]}'} ({PAIR_NAMES[pair]})"
            for pair in PAIRS) + ".")
    return {"within_noise": within, "median_ratio": median_ratio, "exceeds_from_step": exceeds_from,
            "horizons": horizons, "steps_compared": len(steps), "sentence": sentence,
            "statistics": "median over the recorded steps of the TensorFlow-PyTorch weight distance divided by the "
                          "larger of the two controls' distances; a lasting excess starts at the first step whose "
                          "ratio, and the median of the ratio over the rest of the run, exceed the limit"}


def load_run(folder: Path, batch_losses: list[float]) -> dict | None:
    """A run's recorded drift (None when it recorded none)."""
    path = Path(folder) / "drift.npz"
    if not path.is_file():
        return None
    with np.load(path) as saved:
        return {"batch_losses": batch_losses, "steps": saved["steps"], "sketches": saved["sketches"],
                "exact": bool(saved["exact"])}


def plot_drift(drift: dict, path: Path, control: str) -> Path:
    """Two panels on log axes: the batch losses' relative difference and the weights' relative distance."""

    plt = pyplot()
    figure, (losses, weights) = plt.subplots(1, 2, figsize=(12, 4.2))
    styles = {"tf-torch": {"color": "black", "linewidth": 1.6}, "tf-control": {"color": "tab:orange"},
              "torch-control": {"color": "tab:blue"}}
    for pair, found in drift["pairs"].items():
        label = PAIR_NAMES[pair] + ("" if pair == "tf-torch" else f" ({control})")
        loss = np.asarray(found["loss"])
        apart = np.nonzero(loss > 0)[0]  # a log axis has no zero: equal steps are counted in the legend instead
        losses.plot(apart + 1, loss[apart], linestyle="none", marker=".", alpha=0.7, color=styles[pair]["color"],
                    label=f"{label}: {len(loss) - len(apart)} of {len(loss)} steps equal")
        weights.plot(found["weight_steps"], np.maximum(found["weights"], 1e-12), label=label, marker=".",
                     **styles[pair])
    weights.axhline(HORIZON, color="grey", linestyle=":", linewidth=1, label=f"divergence horizon ({HORIZON:g})")
    for axis, title in ((losses, "batch loss: |a - b| / |b|"), (weights, "weights: ||a - b|| / ||b||")):
        axis.set_yscale("log")
        axis.set_xlabel("training step")
        axis.set_title(title)
        axis.grid(True, which="major", alpha=0.3)
    losses.legend(fontsize=8)
    weights.legend(fontsize=8)
    figure.suptitle("How far the runs drift apart: the two frameworks against each one's own rounding noise")
    return save_figure(figure, path)
