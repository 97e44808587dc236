#!/usr/bin/env python
"""twinnets: run one task on TensorFlow and PyTorch from the same weights and data, and compare them.

    python compare.py --task neuron
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from harness import comparison, pair, seeds
from harness.benchmark import run as benchmark_run
from harness.benchmark.presets import preset_overrides
from harness.benchmark.report import ParityFailed
from harness.diagnose import run as diagnose
from harness.drift import CONTROLS
from harness.flags import ArgumentParser, add_unet_flags, check_arms, check_counts, check_device, frameworks
from harness.launch import SideFailed
from harness.lifetime import Terminated, stop_on_sigterm
from harness.paths import resolve_user_paths
from harness.predict import run as predict
from harness.registry import REGISTRY
from harness.resume import check_resume_alone, resume
from harness.surface import NATIVE, SIDES
from shared.distributed import check_divisible
from shared.errors import UserError, os_error_line
from shared.execution import DEVICES, PRECISIONS
from shared.recipes import recipe_line, recipe_values
from shared.tasks import TASKS, TaskSpec, UNetSpec, make_spec, parse_image_size, size_text

# Flags that set a field of the task's spec; a flag whose field the task lacks is refused.
SPEC_FLAGS = ("epochs", "batch_size", "lr", "seed", "sample_size", "validation_size", "image_size",
              "base_filters", "optimizer", "variant", "workers", "schedule", "warmup_epochs", "save_best",
              "init_weights", "mask_threshold", "split_by")


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="compare.py", description=__doc__.splitlines()[0])
    add = parser.add_argument
    add("--task", choices=list(TASKS), help="which task to run on both sides")
    add("--frameworks", default="tf,torch", help=f"comma-separated sides: {', '.join(SIDES)}; or all")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--data-dir", type=Path, help="folder of the real dataset (default: the embedded one)")
    source.add_argument("--download", action="store_true", help="fetch the real dataset first")
    add("--epochs", type=int, help="training epochs (neuron: gradient steps)")
    add("--batch-size", type=int)
    add("--lr", type=float, help="learning rate")
    add("--seed", type=int, help="seed of initial weights, data order and augmentation")
    add("--sample-size", type=int, help="training images kept (default: all)")
    add("--validation-size", type=float, help="share held out for validation")
    add("--image-size", type=parse_image_size,
        help="input size in pixels: N (N x N) or HxW, height x width (128x192 keeps Carvana's 2:3 photos unsqueezed)")
    add("--base-filters", type=int, help="U-Net width of the first level")
    add("--optimizer", choices=["sgd", "adam"])
    add("--variant", choices=["padded", "original"], help="U-Net variant")
    add("--workers", type=int, help="data-loading workers per side")
    add_unet_flags(parser)
    full = UNetSpec.full_size
    add("--full-size", action="store_true",
        help=f"unet at full size: --image-size {size_text(full['padded']['image_size'])} (TorchBench's U-Net; "
             f"{size_text(full['original']['image_size'])} for "
             f"--variant original) --base-filters {full['padded']['base_filters']}; each can still be set on its own")
    add("--threads", type=int, default=os.cpu_count(), help="intra-op threads per side (default: all cores)")
    add("--out", type=Path, help="output folder (default: runs/<task>-<timestamp>)")
    add("--device", choices=DEVICES, default="cpu", help="where both sides run (auto: cuda if present)")
    add("--nproc", type=int, default=1,
        help="unet: data-parallel processes per side on this machine (torchrun + DDP; MultiWorkerMirroredStrategy "
             "workers); the global batch is split across them")
    add("--precision", choices=PRECISIONS, default="fp32",
        help="training precision of mlp, cnn, unet: bf16/fp16 mixed (float32 weights); fp16 with loss scaling, on "
             "cuda only")
    add("--control", choices=CONTROLS, default="ulp",
        help="mlp, cnn, unet: each side also trains a control run, from initial weights moved by 1 ulp (ulp) or "
             "with 1 thread (threads), to measure its own rounding noise; none: no control")
    add("--seeds", help="repeat the whole comparison for these seeds (0,1,2) or the first N (5: seeds 0..4)")
    predict.add_flags(parser)
    benchmark_run.add_flags(parser)
    add("--diagnose", type=int, metavar="K",
        help="mlp, cnn, unet: run the first K training steps on both sides from the same weights and batches and "
             "find where the twins part: every layer's outputs, gradients, updated weights and optimizer state")
    add("--in-process", action="store_true", help="run both sides in this process (for debugging)")
    add("--overwrite", action="store_true", help="allow writing into a non-empty --out folder")
    add("--resume", type=Path, metavar="RUN_DIR", help="continue a killed run from its last checkpoints, with its "
                                                       "own settings")
    pair.flags.add_flags(parser)
    return parser


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, TaskSpec | None, list[str]]:
    """The options, the task's spec and the sides to run; every inconsistency is one UserError line. A prediction
    and a resumed run take their settings from the run folder, checked there."""
    parser = build_parser()
    args = resolve_user_paths(parser.parse_args(argv))  # the workers start elsewhere: no relative path reaches them
    if args.resume is not None:
        check_resume_alone(args, parser)
    if args.resume is not None or args.predict is not None or args.pair is not None:
        return args, None, []
    pair.flags.check_unused(args)
    if args.task is None:
        raise UserError("the following arguments are required: --task (see --help)")
    sides = frameworks(args.frameworks, SIDES)
    check_counts(args)
    overrides = {flag: getattr(args, flag) for flag in SPEC_FLAGS if getattr(args, flag) is not None}
    if args.full_size:
        full_size = TASKS[args.task].full_size
        if full_size is None:
            raise UserError(f"--full-size does not apply to task {args.task!r}: it sizes the U-Net")
        overrides = {**full_size[args.variant or "padded"], **overrides}
    overrides = {**preset_overrides(args), **overrides}  # --preset's spec fields, under the explicit flags
    if args.init_weights is not None:
        overrides["init_weights"] = str(args.init_weights)
    if args.recipe is not None:  # the lowest layer: --full-size and every explicit flag win over it
        overrides = {"recipe": args.recipe, **recipe_values(args.recipe), **overrides}
    spec = make_spec(args.task, **overrides)
    task = REGISTRY[spec.name]
    check_arms(args, sides, NATIVE, task.trains)
    check_device(args.device)  # no GPU here: refused before a worker starts and a folder exists
    if not spec.uses_data and (args.data_dir or args.download):
        raise UserError(f"--data-dir and --download do not apply to task {args.task!r}: it needs no dataset")
    if args.data_dir is not None and not args.data_dir.exists():
        raise UserError(f"{args.data_dir}: no such folder (--data-dir)")
    if task.fit_data is not None:  # what the data decides (a grayscale folder set: one input channel)
        spec = task.fit_data(spec, args.data_dir, args.download)
    if getattr(spec, "init_weights", None):
        task.initial_weights(spec)  # a missing file or a mismatched tensor: one line, before any side starts
    if args.benchmark:
        benchmark_run.check_benchmark_args(args, spec, task.trains)
    if args.inference and not args.benchmark:
        raise UserError("--inference times the forward pass in the benchmark: give it with --benchmark")
    if args.seeds is not None and (args.benchmark or args.diagnose is not None or args.seed is not None):
        raise UserError("--seeds repeats a training comparison: leave out --seed, --benchmark and --diagnose")
    if args.seeds is not None:
        seeds.parse_seeds(args.seeds)  # every seed checked before the first one trains
    if args.diagnose is not None and (not task.trains or args.diagnose < 1 or len(sides) != 2):
        raise UserError(f"--diagnose K needs K >= 1, both sides and a trained task (mlp, cnn, unet), got "
                        f"--diagnose {args.diagnose} for {args.task!r} on {','.join(sides)}")
    if args.diagnose is not None and (args.benchmark or args.nproc != 1 or args.precision != "fp32"):
        raise UserError("--diagnose compares one process per side in fp32: leave out --benchmark, --nproc and "
                        "--precision")
    if args.nproc > 1:
        if task.run_distributed is None or args.in_process:
            raise UserError("--nproc applies to --task unet, each side in its own processes (not --in-process)")
        if args.precision != "fp32":
            raise UserError("--nproc trains in fp32: leave out --precision")
        if spec.schedule != "constant" or spec.warmup_epochs:
            raise UserError("--nproc trains with a constant learning rate: leave out --schedule and --warmup-epochs")
        check_divisible(args.bench_batch_sizes[0] if args.benchmark else spec.batch_size, args.nproc)
    if args.precision != "fp32" and not task.trains:
        raise UserError(f"--precision does not apply to task {args.task!r}: it trains nothing")
    if args.precision == "fp16" and args.device != "cuda":
        raise UserError("--precision fp16 needs --device cuda: CPUs have no fast float16 arithmetic (use bf16)")
    return args, spec, sides


def main(argv: list[str] | None = None) -> int:
    stop_on_sigterm()
    try:
        args, spec, sides = parse_args(sys.argv[1:] if argv is None else argv)
        if args.predict is not None:
            return predict.main(args)
        if args.pair is not None:
            return pair.run.main(args)
        if spec is not None:  # a size that cannot fit, refused before any work
            batch_sizes = getattr(args, "bench_batch_sizes", None) or [getattr(spec, "batch_size", 1)]
            REGISTRY[spec.name].check_memory(spec, max(batch_sizes))
        if args.resume is not None:
            resume(args.resume, args.in_process, args.data_dir)
        elif args.diagnose is not None:
            diagnose.run_diagnose(spec, sides, args)
        elif args.benchmark:
            benchmark_run.run_benchmark(spec, sides, args)
        elif args.seeds is not None:
            seeds.run_seeds(spec, sides, args, seeds.parse_seeds(args.seeds))
        else:
            if getattr(spec, "recipe", None):
                print(recipe_line(spec.to_dict()), flush=True)
            comparison.compare(spec, sides, args)
    except UserError as error:
        print(f"compare.py: error: {error}", file=sys.stderr)
        return error.exit_status
    except OSError as error:  # a full disk, an unwritable --out or cache: the path and the system's words
        print(f"compare.py: error: {os_error_line(error)}", file=sys.stderr)
        return 2
    except SideFailed as failure:
        print(f"compare.py: error: {failure}", file=sys.stderr)
        return 1
    except ParityFailed as failure:
        print(f"compare.py: error: parity failed, so no timing is reported: {failure}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as interrupt:
        return 143 if isinstance(interrupt, Terminated) else 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
