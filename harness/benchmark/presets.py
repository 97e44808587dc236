"""--preset NAME: benchmark shapes that match public benchmarks (or this project's quick default), each with its
source, the spec fields it sets, and the warm-up and timed steps that keep it within its time budget. Explicit
flags override every field a preset sets."""
from __future__ import annotations

from dataclasses import dataclass, field

from harness.report import SIDE_NAMES
from shared.errors import UserError
from shared.tasks import TASKS, shape_text


@dataclass(frozen=True)
class Preset:
    name: str
    source: str  # where the shape comes from, printed in the header
    spec: dict = field(default_factory=dict)  # spec fields (--image-size, --base-filters, --batch-size, --variant)
    warmup: int = 10
    steps: int = 30
    modes: str | None = None  # None: every mode (--modes all)
    arm_modes: str | None = None  # the Keras arms' modes when `modes` names only the native sides'
    arm_note: str = ""  # what arm_modes chose, in the header of a run with arms
    pipeline: bool = True  # the loader's epoch row
    bf16_needs_units: bool = False  # bf16 rows only where the CPU has bf16 arithmetic (else minutes per step)
    reference: dict | None = None  # published figures shown next to a GPU run
    note: str = ""


# NVIDIA DeepLearningExamples TensorFlow2/Segmentation/UNet_Medical: its published training throughput on an A100
# at batch 8, a reference line for a GPU run (another GPU, framework and data: a scale, not a parity check).
NVIDIA_A100 = {"what": "NVIDIA DeepLearningExamples UNet_Medical (TensorFlow 2), A100, batch 8, training",
               "img_per_s": {"tf32": 46.0, "amp": 119.0}}

PRESETS: dict[str, Preset] = {preset.name: preset for preset in (
    Preset("default", "this project's defaults: seconds per row on 2 cores"),
    # 289 GFLOP a step at batch 4: several seconds a step on 2 cores, so few steps, the compiled and the
    # training modes, and no loader epoch, to finish within 10 minutes.
    Preset("cpu", "128x128 photos, width 64, batch 4: where a CPU's convolutions are compute-bound",
           {"image_size": 128, "base_filters": 64, "batch_size": 4, "variant": "padded"}, warmup=1, steps=4,
           modes="tf:function,tf:xla,torch:eager,torch:compile", pipeline=False, bf16_needs_units=True,
           note="modes tf.function, XLA, eager and torch.compile; no loader epoch; bf16 only on a CPU with bf16 "
                "units (--modes, --precisions override)",
           # Left out, to finish within 10 minutes: JAX op by op (run_eagerly), ten times its jax.jit step, and
           # torch.compile of Keras' step, over two minutes of compiling (docs/benchmark.md, "Keras 3's engines").
           arm_modes="keras-tf:function,keras-tf:xla,keras-jax:jit,keras-torch:eager",
           arm_note="the Keras arms: jit_compile off and on on TensorFlow, jax.jit on JAX, eager on PyTorch"),
    Preset("torchbench", "TorchBench pytorch_unet (milesial Pytorch-UNet): 3x640x959 Carvana photos, batch 1, "
                         "width 64",
           {"image_size": (640, 960), "base_filters": 64, "batch_size": 1, "variant": "padded"}, warmup=5, steps=20,
           pipeline=False, note="640x960, not 640x959: the padded U-Net needs multiples of 16; sized for a GPU"),
    Preset("nvidia-unet", "NVIDIA DeepLearningExamples UNet_Medical: the original U-Net, 572x572 tile, batch 8, "
                          "width 64",
           {"image_size": 572, "base_filters": 64, "batch_size": 8, "variant": "original"}, warmup=5, steps=20,
           pipeline=False, reference=NVIDIA_A100, note="sized for a GPU"),
)}


def preset_of(args) -> Preset | None:
    name = getattr(args, "preset", None)
    return None if name is None else PRESETS[name]


def preset_overrides(args) -> dict:
    """The spec fields --preset sets, for parse_args to put under the explicit flags; one-line errors."""
    preset = preset_of(args)
    if preset is None:
        return {}
    if not args.benchmark:
        raise UserError(f"--preset {preset.name} applies to --benchmark")
    if any(name not in TASKS[args.task].__dataclass_fields__ for name in preset.spec):  # a size the task lacks
        raise UserError(f"--preset {preset.name} sizes the U-Net: use it with --task unet")
    if preset.spec and getattr(args, "full_size", False):
        raise UserError(f"--preset {preset.name} and --full-size both size the U-Net: choose one")
    return dict(preset.spec)


def describe(preset: Preset, spec, arms: bool = False) -> str:
    """The header's preset line: name, source, the size used, and what else it chose (for the arms too, if any)."""
    size = f"; input {shape_text(spec.image_size)}" if hasattr(spec, "base_filters") else ""
    notes = [preset.note] + ([preset.arm_note] if arms else [])
    notes = "; ".join(note for note in notes if note)
    return f"preset {preset.name}: {preset.source}{size}" + (f" ({notes})" if notes else "")


def reference_line(preset: Preset, rows: list[dict], device: str) -> str | None:
    """A preset's published figures next to this run's, on a GPU only (on a CPU they measure something else)."""
    if preset.reference is None or device != "cuda":
        return None
    published = preset.reference
    batch = preset.spec.get("batch_size")
    here = ", ".join(f"{SIDE_NAMES[r['side']]} {r['mode']} {r['precision']} {r['stats']['samples_per_s']:.1f}"
                     for r in rows if r["batch_size"] == batch)
    return (f"{published['what']}: " + ", ".join(f"{k.upper()} {v:g} img/s" for k, v in published["img_per_s"].items())
            + f" (published); this run, img/s: {here or 'no rows at batch ' + str(batch)}")
