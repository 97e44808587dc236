"""One frozen dataclass per task: its hyperparameters and shapes, the single source of truth for both sides."""
from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass
from typing import ClassVar

from shared.errors import UserError
from shared.recipes import RECIPES
from shared.schedules import SCHEDULES


@dataclass(frozen=True)
class TaskSpec:
    """Fields common to every task; each task adds its own."""
    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    uses_data: ClassVar[bool] = False  # True when --data-dir / --download apply
    convolutional: ClassVar[bool] = False  # True where a GPU's convolutions want the channels-last layout
    full_size: ClassVar[dict[str, dict] | None] = None  # --full-size: the fields it sets, per variant

    seed: int = 0  # seeds initial weights, data order and augmentation

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if value is None or isinstance(value, (str, bool)) or field.name not in LIMITS:
                continue
            flag = "--" + field.name.replace("_", "-")
            values = value if isinstance(value, tuple) else (value,)  # a (height, width) --image-size
            low, high = LIMITS[field.name]
            if not all(math.isfinite(v) for v in values):
                raise UserError(f"{flag} must be a finite number, got {value}")
            if field.name in POSITIVE_FIELDS and min(values) <= 0:
                raise UserError(f"{flag} must be positive, got {value}")
            if min(values) < low or max(values) > high:
                raise UserError(f"{flag} must lie in [{low:,}, {high:,}], got {value}")

    def replace(self, **changes) -> "TaskSpec":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# Fields that must be > 0 whenever a task has them.
POSITIVE_FIELDS = {"epochs", "batch_size", "lr", "image_size", "base_filters", "sample_size", "log_interval",
                   "mask_threshold"}
# The range of every numeric field a flag sets (finite, always): wide enough for any real run, narrow enough that
# a typo (--epochs 1e9, --lr 1e6, --seed -1) is refused in one line instead of running for days or failing deep
# inside a framework. numpy seeds are unsigned 32-bit.
LIMITS = {"seed": (0, 2**32 - 1), "epochs": (1, 100_000), "batch_size": (1, 65_536), "lr": (0, 1e10),
          "image_size": (1, 65_536), "base_filters": (1, 4_096), "sample_size": (1, 10**9), "log_interval": (1, 10**9),
          "validation_size": (0, 1), "workers": (0, 256), "warmup_epochs": (0, 100_000), "in_channels": (1, 3),
          "mask_threshold": (0, 2**32)}


@dataclass(frozen=True)
class NeuronSpec(TaskSpec):
    """O = sigmoid(phi * w + b), fitted to a target by plain gradient descent on E = 1/2 (O - target)^2."""
    name: ClassVar[str] = "neuron"
    summary: ClassVar[str] = "one sigmoid neuron fitted by gradient descent"

    phi: float = -0.23  # the single input
    target: float = 0.74  # the output we want
    w0: float = 2.0  # initial weight (both sides start here)
    b0: float = -1.0  # initial bias
    lr: float = 2.0  # gradient-descent step size
    epochs: int = 200  # gradient steps (one example, so one step per epoch)


@dataclass(frozen=True)
class AutogradSpec(TaskSpec):
    """Tensors and automatic differentiation: z = 2 x^2 + 5 x at x = 2 * ones(2, 2)."""
    name: ClassVar[str] = "autograd"
    summary: ClassVar[str] = "tensors, autograd and the graph each framework builds"

    x_value: float = 2.0  # x = x_value * ones(shape)
    shape: tuple = (2, 2)


@dataclass(frozen=True)
class MLPSpec(TaskSpec):
    """The 784-200-200-10 classifier: ReLU, log_softmax + NLL, SGD with momentum."""
    name: ClassVar[str] = "mlp"
    summary: ClassVar[str] = "784-200-200-10 fully connected MNIST classifier"
    uses_data: ClassVar[bool] = True

    layer_sizes: tuple = (784, 200, 200, 10)  # input, hidden..., classes
    lr: float = 0.01
    momentum: float = 0.9
    batch_size: int = 200
    epochs: int = 10
    log_interval: int = 10  # a log line every this many batches
    sample_size: int | None = None  # None: every training image
    mean: float = 0.1307  # MNIST normalisation, the same on both sides
    std: float = 0.3081

    @property
    def image_size(self) -> int:
        return math.isqrt(self.layer_sizes[0])  # 784 inputs: 28 x 28 pixels


@dataclass(frozen=True)
class CNNSpec(TaskSpec):
    """A small CNN: conv5x5(32) relu pool, conv5x5(64) relu pool, fc 3136->1000 relu, fc 1000->10."""
    name: ClassVar[str] = "cnn"
    summary: ClassVar[str] = "small convolutional MNIST classifier"
    uses_data: ClassVar[bool] = True
    convolutional: ClassVar[bool] = True

    channels: tuple = (32, 64)  # filters of the two conv layers
    kernel_size: int = 5
    hidden: int = 1000  # width of the first fully connected layer
    classes: int = 10
    image_size: int = 28
    lr: float = 0.01
    momentum: float = 0.9
    batch_size: int = 200
    epochs: int = 3
    log_interval: int = 10
    sample_size: int | None = None
    mean: float = 0.1307
    std: float = 0.3081

    @property
    def feature_map(self) -> tuple[int, int, int]:
        """(C, H, W) of the last pooled feature map, which fc1 flattens: (64, 7, 7)."""
        side = self.image_size // 4  # two 2x2 max-pools
        return self.channels[-1], side, side

    @property
    def flat_features(self) -> int:
        channels, height, width = self.feature_map
        return channels * height * width  # 64 * 7 * 7 = 3136


@dataclass(frozen=True)
class UNetSpec(TaskSpec):
    """U-Net car masks (Carvana): BCE + soft Dice, SGD lr 0.01 momentum 0.99, threshold 0.5."""
    name: ClassVar[str] = "unet"
    summary: ClassVar[str] = "U-Net that masks cars in Carvana photos"
    uses_data: ClassVar[bool] = True
    # The paper's width at the photos' 2:3 shape (TorchBench's U-Net size); the original net takes the paper's 572 tile.
    full_size: ClassVar[dict[str, dict]] = {"padded": {"image_size": (640, 960), "base_filters": 64},
                                            "original": {"image_size": 572, "base_filters": 64}}
    convolutional: ClassVar[bool] = True

    # The defaults are sized to train both sides on the embedded data in under 5 minutes on 2 cores and
    # reach validation Dice >= 0.95; --full-size gives the paper's width and a Carvana-like resolution.
    variant: str = "padded"  # "padded" (output = input size) or "original" (Ronneberger 2015, valid convs)
    image_size: int | tuple = 64  # input: N (N x N) or (height, width); the padded net needs multiples of 16
    base_filters: int = 8  # width of the first level, doubled at each of the 4 downsamplings (paper: 64)
    batch_size: int = 8
    epochs: int = 12
    lr: float = 0.01
    momentum: float = 0.99
    optimizer: str = "sgd"  # "sgd" or "adam"
    adam_eps: float = 1e-8  # PyTorch's default; Keras' own (1e-7) would make the two Adams differ
    threshold: float = 0.5
    sample_size: int | None = None  # number of training images kept (by car); None: all
    validation_size: float = 0.2  # share of the cars held out for validation
    workers: int = 0  # data-loading workers per side
    depth: int = 4  # downsamplings
    bn_eps: float = 1e-5  # PyTorch's default; Keras' own default (1e-3) would break parity
    bn_momentum: float = 0.1  # PyTorch's convention (weight of the new batch); Keras gets 1 - this
    batch_norm: str = "precise"  # Keras' BatchNorm: "precise" (twinnets') or "stock" (the benchmark's stock row)
    augment: bool = True  # joint flip / shift-scale / HSV jitter of the training images
    synthetic_cars: int = 16  # cars in the embedded dataset (16 photos each, Kaggle's 1918x1280)
    synthetic_test_cars: int = 2  # cars in its test folder
    preview_images: int = 4  # validation photos shown in TensorBoard and the report's grid
    # The learning rate per optimizer step (shared/schedules.py; docs/unet-training.md).
    schedule: str = "constant"  # constant, cosine (to lr * lr_floor), step, or plateau (on the validation loss)
    warmup_epochs: int = 0  # linear warm-up over these epochs' steps, from lr * warmup_start to lr
    warmup_start: float = 0.01  # PyTorch's LinearLR start_factor
    lr_floor: float = 0.0  # cosine: the last step's lr as a share of lr (Keras' alpha; PyTorch's eta_min / lr)
    step_epochs: int = 5  # step: the lr is multiplied by step_gamma every this many epochs after the warm-up
    step_gamma: float = 0.1
    plateau_factor: float = 0.5  # plateau: lr *= this after plateau_patience epochs without improvement
    plateau_patience: int = 2  # in Keras' meaning: the 2nd epoch without improvement reduces (PyTorch: 1)
    plateau_cooldown: int = 0  # in Keras' meaning (PyTorch is given this - 1)
    plateau_min_delta: float = 1e-4  # an improvement is a loss below best - this (PyTorch: threshold_mode "abs")
    plateau_min_lr: float = 0.0
    recipe: str = "seed"  # the named set of settings the run started from (shared/recipes.py); explicit flags win
    save_best: str | None = None  # "val_dice" or "val_loss": also keep the best epoch's weights (best.*)
    init_weights: str | None = None  # a canonical .safetensors file to start from instead of the seeded init
    # Your own folder of images/ and masks/ (shared/data/folders.py; docs/data.md):
    in_channels: int = 3  # input channels: RGB; 1 when most of a folder set's images are grayscale (set from the data)
    mask_threshold: float | None = None  # foreground where a mask's value >= this; None: non-zero, two values at most
    split_by: str | None = None  # a regular expression: the part of a file name that groups images (a patient)

    def __post_init__(self) -> None:
        object.__setattr__(self, "image_size", normalize_image_size(self.image_size))  # frozen: set once, here
        super().__post_init__()
        if self.variant not in ("padded", "original"):
            raise UserError(f"--variant must be padded or original, got {self.variant!r}")
        if self.optimizer not in ("sgd", "adam"):
            raise UserError(f"--optimizer must be sgd or adam, got {self.optimizer!r}")
        if self.batch_norm not in ("precise", "stock"):
            raise UserError(f"batch_norm must be precise or stock, got {self.batch_norm!r}")
        if not 0.0 <= self.validation_size < 1.0:
            raise UserError(f"--validation-size must lie in [0, 1), got {self.validation_size}")
        check_training_options(self)
        shown, step = size_text(self.image_size), 2**self.depth
        if self.variant == "padded" and any(side % step for side in self.image_shape):
            example = self._example_size(max(step, round(side / step) * step) for side in self.image_shape)
            raise UserError(f"--image-size {shown}: the padded U-Net needs both sides multiples of {step} (it halves "
                            f"the image {self.depth} times), such as {example}")
        if self.variant == "original" and not all(unet_output_size(side, self.depth) for side in self.image_shape):
            example = self._example_size(nearest_tile_size(side, self.depth) for side in self.image_shape)
            raise UserError(f"--image-size {shown}: the original U-Net needs a valid tile size for each side, such "
                            f"as {example} (valid sides: {', '.join(map(str, valid_tile_sizes(self.depth)[:3]))}, "
                            f"... every {step} pixels)")

    def _example_size(self, sides) -> str:
        """A valid size for a refusal, written as the user wrote theirs (N, or HxW)."""
        height, width = sides
        return size_text(height if isinstance(self.image_size, int) else (height, width))

    @property
    def image_shape(self) -> tuple[int, int]:
        """(height, width) of the input: --image-size N is N x N."""
        return image_shape_of(self.image_size)

    @property
    def output_shape(self) -> tuple[int, int]:
        """(height, width) of the predicted mask: the input's (padded) or the tile's valid centre (original)."""
        if self.variant == "padded":
            return self.image_shape
        height, width = (unet_output_size(side, self.depth) for side in self.image_shape)
        return height, width

    @property
    def output_size(self) -> int:
        """Side of a square predicted mask; a non-square one has no single side (read output_shape)."""
        height, width = self.output_shape
        if height != width:
            raise ValueError(f"the mask is {height}x{width}, not square: read output_shape, not output_size")
        return height

    @property
    def pad(self) -> int:
        """Pixels the original net's input tile reaches beyond its output on each side (0 for the padded net); the
        same along both axes, as every valid convolution loses as many rows as columns."""
        return (self.image_shape[0] - self.output_shape[0]) // 2


def check_training_options(spec: UNetSpec) -> None:
    """The schedule, recipe, best-model, input channel and --split-by fields, each refused in one line when invalid."""
    if spec.schedule not in SCHEDULES:
        raise UserError(f"--schedule must be one of {', '.join(SCHEDULES)}, got {spec.schedule!r}")
    if spec.recipe not in RECIPES:
        raise UserError(f"--recipe must be one of {', '.join(RECIPES)}, got {spec.recipe!r}")
    if not 0 <= spec.warmup_epochs <= spec.epochs:
        raise UserError(f"--warmup-epochs must lie in [0, --epochs], got {spec.warmup_epochs} for {spec.epochs} "
                        "epochs")
    if not 0 < spec.warmup_start <= 1 or not 0 <= spec.lr_floor < 1 or not 0 < spec.plateau_factor < 1:
        raise UserError("warmup_start must lie in (0, 1], lr_floor in [0, 1) and plateau_factor in (0, 1)")
    if spec.step_epochs < 1 or spec.plateau_patience < 1 or spec.plateau_cooldown < 0:
        raise UserError("step_epochs and plateau_patience must be 1 or more, plateau_cooldown 0 or more")
    if spec.save_best not in (None, "val_dice", "val_loss"):
        raise UserError(f"--save-best must be val_dice or val_loss, got {spec.save_best!r}")
    if spec.save_best and spec.validation_size == 0:
        raise UserError(f"--save-best {spec.save_best} needs validation photos: leave --validation-size above 0")
    if spec.in_channels not in (1, 3):
        raise UserError(f"in_channels must be 1 (grayscale) or 3 (RGB), got {spec.in_channels}")
    try:
        re.compile(spec.split_by or "")
    except re.error as error:
        raise UserError(f"--split-by {spec.split_by!r} is not a regular expression ({error})") from None


def unet_output_size(input_size: int, depth: int) -> int | None:
    """Output side of the original (valid-convolution) U-Net for an input tile, or None if the tile is invalid:
    each level loses 4 pixels to two 3x3 convolutions and must have an even side before pooling."""
    size = input_size
    for _ in range(depth):
        size -= 4
        if size <= 0 or size % 2:
            return None
        size //= 2
    size -= 4  # the bottleneck's two convolutions
    if size <= 0:
        return None
    for _ in range(depth):
        size = size * 2 - 4
        if size <= 0:
            return None
    return size


def valid_tile_sizes(depth: int, limit: int = 1024) -> list[int]:
    return [size for size in range(1, limit) if unet_output_size(size, depth)]


def nearest_tile_size(side: int, depth: int) -> int:
    """The valid tile side of the original U-Net nearest to `side` (the smaller one on a tie)."""
    return min(valid_tile_sizes(depth, max(1024, 2 * side)), key=lambda tile: (abs(tile - side), tile))


def image_shape_of(size: int | tuple) -> tuple[int, int]:
    """(height, width) of an --image-size: N is N x N."""
    return (size, size) if isinstance(size, int) else (size[0], size[1])


def normalize_image_size(size) -> int | tuple[int, int]:
    """An --image-size as the spec keeps it: N for a square (also (N, N)), else (height, width); a JSON list (a
    results.json or job file) is read back as its tuple."""
    if isinstance(size, (list, tuple)) and len(size) == 2 and all(isinstance(side, int) for side in size):
        height, width = size
        return height if height == width else (height, width)
    if isinstance(size, int) and not isinstance(size, bool):
        return size
    raise UserError(f"--image-size must be N or HxW (such as 64 or 128x192), got {size!r}")


def size_text(size: int | tuple) -> str:
    """An --image-size as the flag takes it: "64" or "128x192" (height x width)."""
    return str(size) if isinstance(size, int) else f"{size[0]}x{size[1]}"


def shape_text(size: int | tuple) -> str:
    """An --image-size as height x width, also for a square: "64x64", "128x192"."""
    return "{}x{}".format(*image_shape_of(size))


def parse_image_size(text: str) -> int | tuple[int, int]:
    """The --image-size flag: "N" (N x N) or "HxW" (height x width, such as 128x192 for Carvana's 2:3 photos)."""
    parts = text.lower().split("x")
    if len(parts) not in (1, 2) or not all(part.strip().lstrip("-").isdigit() for part in parts):
        raise UserError(f"--image-size must be N or HxW (such as 64 or 128x192), got {text!r}")
    return normalize_image_size(tuple(int(part) for part in parts) if len(parts) == 2 else int(parts[0]))


TASKS: dict[str, type[TaskSpec]] = {spec.name: spec for spec in (NeuronSpec, AutogradSpec, MLPSpec, CNNSpec, UNetSpec)}


def make_spec(task: str, **overrides) -> TaskSpec:
    """The task's default spec with the given fields replaced; unknown task or field raises UserError."""
    if task not in TASKS:
        raise UserError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    spec_class = TASKS[task]
    names = {f.name for f in dataclasses.fields(spec_class)}
    for key in overrides:
        if key not in names:
            raise UserError(f"--{key.replace('_', '-')} does not apply to task {task!r}")
    return spec_class(**overrides)
