"""Equal up to rounding? How far training runs drift apart, step by step, against each framework's own rounding
noise: a control run of each side from initial weights moved by one unit in the last place (or with one thread),
the drift of the batch losses and of the whole weight vector for each side against the reference side (TensorFlow
when it ran) and for each side against its control, and a verdict per side that compares the curves robustly
(divergence horizons and the median ratio), never point by point."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from harness.parity import reference_side
from harness.surface import ARMS, NATIVE
from shared.atomic import atomic_path
from shared.callbacks import Callback
from shared.plotting import pyplot, save_figure
from shared.weights import Weights

CONTROLS = ("ulp", "threads", "none")
FIRST_STEPS = 50  # the weights are recorded after every one of the first steps, then after every epoch
SKETCH_SIZE = 1 << 16  # weight vectors longer than this are compared through a count sketch of this many buckets
HORIZON = 1e-3  # a pair has diverged once its weights are this far apart (relative L2 distance)
RATIO_LIMIT = 10.0  # cross-framework drift within this factor of the larger control's counts as rounding
# Every pair a run can have: "tf-torch", "tf-keras-jax" (a side against the reference), "keras-jax-control".
PAIR_NAMES = {**{f"{a}-{b}": f"{ARMS[a].title} vs {ARMS[b].title}" for a in ARMS for b in ARMS if a != b},
              **{f"{side}-control": f"{arm.title} vs its control" for side, arm in ARMS.items()}}
CONTROL_SUFFIX = "-control"


def pairs_of(runs) -> dict[str, tuple[str, str]]:
    """The pairs of the runs recorded (names, in order): each side against the reference side, then each side
    against its control where it ran."""
    sides = [name for name in runs if not name.endswith(CONTROL_SUFFIX)]
    if not sides:
        return {}
    reference = reference_side(sides)
    pairs = {f"{reference}-{side}": (reference, side) for side in sides if side != reference}
    pairs.update({f"{side}{CONTROL_SUFFIX}": (side, f"{side}{CONTROL_SUFFIX}") for side in sides
                  if f"{side}{CONTROL_SUFFIX}" in runs})
    return pairs


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
    """Every pair's curves and horizon, and the verdicts. runs: name ("tf", "keras-jax", "tf-control") ->
    {"batch_losses", "steps", "sketches"}. "verdict" is the first cross pair's (tf-torch when both native sides
    ran), "verdicts" every cross pair's."""
    pairs = {}
    for pair, (a, b) in pairs_of(runs).items():
        steps, distance = weight_drift(runs[a], runs[b])
        pairs[pair] = {"loss": loss_drift(runs[a]["batch_losses"], runs[b]["batch_losses"]).tolist(),
                       "weight_steps": steps.tolist(), "weights": distance.tolist(),
                       "horizon": horizon(steps, distance)}
    cross = [pair for pair in pairs if not pair.endswith(CONTROL_SUFFIX)]
    verdicts = {pair: verdict(pairs, pair) for pair in cross}
    first = verdicts[cross[0]] if cross else {"within_noise": None, "sentence": "One side ran: no pair to compare."}
    return {"pairs": pairs, "verdict": first, "verdicts": verdicts, "horizon_threshold": HORIZON,
            "ratio_limit": RATIO_LIMIT, "first_steps": FIRST_STEPS}


def floor_controls(pairs: dict, a: str, b: str) -> tuple[list[str], bool]:
    """The control pairs whose larger drift is the noise floor of the pair (a, b): the two sides' own controls; an
    arm that ran none borrows the native sides' (True: borrowed)."""
    own = [f"{side}{CONTROL_SUFFIX}" for side in (a, b) if f"{side}{CONTROL_SUFFIX}" in pairs]
    if all(f"{side}{CONTROL_SUFFIX}" in pairs for side in (a, b)):
        return own, False
    native = [f"{side}{CONTROL_SUFFIX}" for side in NATIVE if f"{side}{CONTROL_SUFFIX}" in pairs]
    return list(dict.fromkeys(own + native)), True


def verdict(pairs: dict, pair: str = "tf-torch") -> dict:
    """One cross pair's weight drift against the larger control's, at the steps all of them recorded: the median
    of their ratio over the run, the first step whose ratio exceeds RATIO_LIMIT while the ratio's median over the
    rest of the run does too (a lasting excess, not one noisy point), and the divergence horizons."""
    a, b = pair_sides(pair)
    names = f"{ARMS[a].title} and {ARMS[b].title}"
    controls, borrowed = floor_controls(pairs, a, b)
    if pair not in pairs:
        return {"within_noise": None, "sentence": f"{names}: the two did not both record their drift."}
    if not controls:
        return {"within_noise": None, "sentence": f"No control was run (--control none): the drift of {names} has "
                                                  "nothing to be compared with."}
    cross = dict(zip(pairs[pair]["weight_steps"], pairs[pair]["weights"]))
    floors = [dict(zip(pairs[p]["weight_steps"], pairs[p]["weights"])) for p in controls]
    steps = [s for s in sorted(cross) if s > 0 and all(s in c for c in floors)]
    floor = np.array([max(c[s] for c in floors) for s in steps])
    ratio = np.array([cross[s] for s in steps]) / np.maximum(floor, 1e-30)
    if not ratio.size:
        return {"within_noise": None, "median_ratio": None, "steps_compared": 0,
                "sentence": f"{names}: the runs recorded no step after the first in common: no verdict."}
    median_ratio = float(np.median(ratio))
    exceeds_from = next((steps[i] for i in range(len(steps))
                         if ratio[i] > RATIO_LIMIT and np.median(ratio[i:]) > RATIO_LIMIT), None)
    within = exceeds_from is None
    horizons = {name: pairs[name]["horizon"] for name in (pair, *controls)}
    itself = "each framework drifts from itself" if not borrowed else "the native sides drift from themselves"
    missing = " and ".join(ARMS[s].title for s in (a, b) if f"{s}{CONTROL_SUFFIX}" not in pairs)
    floor_of = " and ".join(ARMS[c.removesuffix(CONTROL_SUFFIX)].title for c in controls)
    figures = (f"the median ratio of their weight distance to the larger control's is {median_ratio:.2g} (limit "
               f"{RATIO_LIMIT:g}" + (f"; {missing} ran no control, so the floor is the larger drift of {floor_of} "
                                     "from their controls)" if borrowed else ")"))
    sentence = (
        (f"{names} drift apart no more than {itself}: {figures}" if within else
         f"{names} drift apart more than rounding explains from step {exceeds_from} on: {figures}")
        + f"; divergence horizon (weights {HORIZON:g} apart): " + ", ".join(
            f"{'not reached' if found is None else f'step {found}'} ({PAIR_NAMES[name]})"
            for name, found in horizons.items()) + ".")
    return {"within_noise": within, "median_ratio": median_ratio, "exceeds_from_step": exceeds_from,
            "horizons": horizons, "steps_compared": len(steps), "controls": controls, "borrowed": borrowed,
            "sentence": sentence,
            "statistics": "median over the recorded steps of a pair's weight distance divided by the larger of its "
                          "controls' distances (the two sides' own; the native sides' for an arm that ran none); a "
                          "lasting excess starts at the first step whose ratio, and the median of the ratio over the "
                          "rest of the run, exceed the limit"}


def pair_sides(pair: str) -> tuple[str, str]:
    """The two runs a cross pair's name joins: "tf-keras-jax" -> ("tf", "keras-jax")."""
    for a in ARMS:
        if pair.startswith(f"{a}-") and pair[len(a) + 1:] in ARMS:
            return a, pair[len(a) + 1:]
    raise ValueError(f"not a pair of two sides: {pair}")


def sentences(drift: dict) -> list[str]:
    """The verdict of every cross pair (a result from before per-side verdicts: its one verdict)."""
    return [found["sentence"] for found in drift.get("verdicts", {}).values()] or [drift["verdict"]["sentence"]]


def load_run(folder: Path, batch_losses: list[float]) -> dict | None:
    """A run's recorded drift (None when it recorded none)."""
    path = Path(folder) / "drift.npz"
    if not path.is_file():
        return None
    with np.load(path) as saved:
        return {"batch_losses": batch_losses, "steps": saved["steps"], "sketches": saved["sketches"],
                "exact": bool(saved["exact"])}


def pair_style(pair: str) -> dict:
    """TensorFlow vs PyTorch black, as it always was; another side against the reference solid in its colour; each
    side against its control dashed in its colour."""
    if pair.endswith(CONTROL_SUFFIX):
        return {"color": ARMS[pair.removesuffix(CONTROL_SUFFIX)].color, "linestyle": "--", "linewidth": 1}
    a, b = pair_sides(pair)
    return {"color": "black" if {a, b} == set(NATIVE) else ARMS[b].color, "linewidth": 1.6}


def plot_drift(drift: dict, path: Path, control: str) -> Path:
    """Two panels on log axes: the batch losses' relative difference and the weights' relative distance."""

    plt = pyplot()
    figure, (losses, weights) = plt.subplots(1, 2, figsize=(12, 4.2))
    for pair, found in drift["pairs"].items():
        style = pair_style(pair)
        label = PAIR_NAMES[pair] + (f" ({control})" if pair.endswith(CONTROL_SUFFIX) else "")
        loss = np.asarray(found["loss"])
        apart = np.nonzero(loss > 0)[0]  # a log axis has no zero: equal steps are counted in the legend instead
        losses.plot(apart + 1, loss[apart], linestyle="none", marker="x" if pair.endswith(CONTROL_SUFFIX) else ".",
                    alpha=0.7, color=style["color"], label=f"{label}: {len(loss) - len(apart)} of {len(loss)} "
                                                           "steps equal")
        weights.plot(found["weight_steps"], np.maximum(found["weights"], 1e-12), label=label, marker=".", **style)
    weights.axhline(HORIZON, color="grey", linestyle=":", linewidth=1, label=f"divergence horizon ({HORIZON:g})")
    for axis, title in ((losses, "batch loss: |a - b| / |b|"), (weights, "weights: ||a - b|| / ||b||")):
        axis.set_yscale("log")
        axis.set_xlabel("training step")
        axis.set_title(title)
        axis.grid(True, which="major", alpha=0.3)
    losses.legend(fontsize=8)
    weights.legend(fontsize=8)
    figure.suptitle("How far the runs drift apart: the sides against each other and each against its own "
                    "rounding noise")
    return save_figure(figure, path)
