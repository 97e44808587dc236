"""Command-line helpers every mode shares: argparse with one-line errors, and comma-separated flag values."""
from __future__ import annotations

import argparse
import os
from pathlib import Path

from harness.environment import gpu_device_files
from shared.errors import UserError
from shared.recipes import DESCRIPTIONS, RECIPES
from shared.schedules import SCHEDULES


class ArgumentParser(argparse.ArgumentParser):
    """argparse without abbreviations (--pred must not pass for --predict) and with one-line errors."""

    def __init__(self, **kwargs) -> None:
        super().__init__(allow_abbrev=False, **kwargs)

    def error(self, message: str) -> None:
        """One line, exit status 2 (argparse would print the whole usage first)."""
        raise UserError(f"{message} (see --help)")


def comma_list(text: str, flag: str, choices=None, convert=str) -> list:
    """A comma-separated flag value as a list, each item converted and one of the choices. An empty item, a repeat
    and "all" beside other names are refused: folded away, "tf,tf" or "tf," would run one side and compare nothing."""
    items = [item.strip() for item in text.split(",")]
    if "all" in items and len(items) > 1:
        raise UserError(f"{flag} {text!r}: all names every choice; give it alone or list the names")
    if text.strip() and "" in items:
        raise UserError(f"{flag} {text!r}: an empty name between commas")
    try:
        values = [convert(item) for item in items if item]
    except ValueError:
        raise UserError(f"{flag} {text!r}: expected a comma-separated list") from None
    if not values or any(choices is not None and value not in choices for value in values):
        raise UserError(f"{flag} {text!r}: " + (f"choose from {', '.join(map(str, choices))}" if choices
                                                else "expected a comma-separated list"))
    repeated = [str(value) for value in dict.fromkeys(values) if values.count(value) > 1]
    if repeated:
        raise UserError(f"{flag} {text!r}: {', '.join(repeated)} named more than once")
    return values


def add_unet_flags(parser: argparse.ArgumentParser) -> None:
    """The U-Net's flags of training (recipe, schedule, best and initial weights) and of your own folder set."""
    add = parser.add_argument
    add("--recipe", choices=list(RECIPES),
        help="unet: a named set of settings, each flag given still wins: "
             + "; ".join(f"{name}: {text}" for name, text in DESCRIPTIONS.items()) + " (default: seed)")
    add("--schedule", choices=SCHEDULES, help="unet: the learning rate per step (default: constant)")
    add("--warmup-epochs", type=int, help="unet: linear learning-rate warm-up over these epochs' steps")
    add("--save-best", choices=["val_dice", "val_loss"],
        help="unet: also keep the weights of the best epoch by this validation metric (best.*)")
    add("--init-weights", type=Path, metavar="FILE",
        help="unet: start from these canonical weights (a run's model.safetensors, either side) instead of the "
             "seeded initialisation")
    add("--mask-threshold", type=float, metavar="T",
        help="unet, your own folder set (--data-dir with images/ and masks/): mask values >= T are foreground "
             "(default: non-zero, and a mask may hold two values only)")
    add("--split-by", metavar="REGEX",
        help="unet, your own folder set: the part of a file name that groups images (a patient, a slide; the first "
             "group of the expression if it has one); no group is on both sides of the split (default: by file)")


# The ranges of the flags that set no spec field (shared/tasks.py LIMITS has the others): a thread count far beyond
# the cores only makes the frameworks start thousands of threads (or hang doing so).
COUNTS = {"threads": (1, max(64, 8 * (os.cpu_count() or 1))), "nproc": (1, 64), "diagnose": (1, 1_000),
          "preview": (0, 100_000), "checkpoint": (1, 100_000)}


def check_counts(args: argparse.Namespace) -> None:
    """Each count flag given lies in its range (COUNTS), or one line says which and why."""
    for name, (low, high) in COUNTS.items():
        value = getattr(args, name, None)
        if value is not None and not low <= value <= high:
            flag = "--" + name.replace("_", "-")
            raise UserError(f"{flag} must be positive, got {value}" if value <= 0 < low else
                            f"{flag} must lie in [{low}, {high}], got {value}")


def check_device(device: str) -> None:
    """--device cuda where no framework can see a GPU, refused before any folder or worker exists: no GPU device file,
    or CUDA_VISIBLE_DEVICES hiding every GPU. A GPU that a CPU-only build of a framework cannot use is still refused
    by that side's worker (its runtime.configure_execution)."""
    if device != "cuda":
        return
    hidden = os.environ.get("CUDA_VISIBLE_DEVICES")
    if hidden is not None and hidden.strip() in ("", "-1"):
        raise UserError(f"--device cuda: CUDA_VISIBLE_DEVICES={hidden!r} hides every GPU; use --device cpu or auto")
    if not gpu_device_files():
        raise UserError("--device cuda: this machine has no GPU (no /dev/nvidia*, /dev/kfd or /dev/dxg); use --device "
                        "cpu or auto")


def frameworks(text: str, sides: tuple[str, ...]) -> list[str]:
    """--frameworks: a comma-separated list of sides, or "all" of them."""
    return list(sides) if text.strip() == "all" else comma_list(text, "--frameworks", (*sides, "all"))


def check_arms(args: argparse.Namespace, sides: list[str], native: tuple[str, ...], trains: bool) -> None:
    """The portable Keras arms train mlp, cnn and unet, each in a process of its own that chose its engine before
    Keras was imported, on the CPU; the lessons, --diagnose and data-parallel runs are the native sides' alone."""
    arms = [side for side in sides if side not in native]
    if not arms:
        return
    named = ", ".join(arms)
    if not trains:
        raise UserError(f"--frameworks {named}: the Keras arms train mlp, cnn and unet; the lessons are "
                        f"written for {' and '.join(native)}")
    if args.in_process:
        raise UserError(f"--frameworks {named}: each Keras arm sets KERAS_BACKEND in a process of its own; "
                        "leave out --in-process")
    if args.diagnose is not None or args.nproc != 1:
        raise UserError(f"--frameworks {named}: --diagnose and --nproc compare the native sides "
                        f"({', '.join(native)}) only")
    if args.device == "cuda":
        raise UserError(f"--frameworks {named}: the Keras arms run on the CPU; use --device cpu or auto")
