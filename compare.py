#!/usr/bin/env python
"""twinnets: run one task on TensorFlow and PyTorch from the same weights and data, and compare them.

    python compare.py --task neuron
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from shared import benchmark, benchmark_run, run, seeds
from shared.benchmark_presets import PRESETS, preset_overrides
from shared.benchmark_report import ParityFailed
from shared.benchmark_run import BENCH_PRECISIONS, check_benchmark_args, comma_list
from shared.distributed import check_divisible
from shared.drift import CONTROLS
from shared.errors import UserError
from shared.execution import DEVICES, MODES, PRECISIONS
from shared.recipes import DESCRIPTIONS, RECIPES, recipe_line, recipe_values
from shared.registry import REGISTRY
from shared.schedules import SCHEDULES
from shared.surface import SIDES
from shared.tasks import TASKS, TaskSpec, UNetSpec, make_spec, parse_image_size, size_text
from shared.workers import WORKER_MODES, SideFailed, worker_main

# Flags that set a field of the task's spec; a flag whose field the task lacks is refused.
SPEC_FLAGS = ("epochs", "batch_size", "lr", "seed", "sample_size", "validation_size", "image_size",
              "base_filters", "optimizer", "variant", "workers", "schedule", "warmup_epochs", "save_best",
              "init_weights")


class ArgumentParser(argparse.ArgumentParser):
    def error(self, message: str) -> None:
        """One line, exit status 2 (argparse would print the whole usage first)."""
        raise UserError(f"{message} (see --help)")


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="compare.py", description=__doc__.splitlines()[0])
    add = parser.add_argument
    add("--task", choices=list(TASKS), help="which task to run on both sides")
    add("--frameworks", default="tf,torch", help="comma-separated sides to run: tf, torch")
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
    predict = parser.add_argument_group("prediction (--predict RUN_DIR)").add_argument
    predict("--predict", type=Path, metavar="RUN_DIR", help="predict with the trained weights of an earlier run")
    predict("--checkpoint", type=int, metavar="N", help="the weights after epoch N instead of the final model")
    predict("--weights", type=Path, metavar="FILE", help="one canonical .safetensors file for both sides")
    predict("--weights-from", choices=SIDES, help="one side's trained weights of RUN_DIR, for both sides")
    predict("--images", type=Path, nargs="+", metavar="PATH", help="photos or folders of photos to predict")
    predict("--preview", type=int, default=8, metavar="N", help="overlays written for the first N photos")
    predict("--skip-bad", action="store_true", help="skip (and list) photos that cannot be read")
    bench = parser.add_argument_group("benchmark (--benchmark)").add_argument
    bench("--benchmark", action="store_true",
          help="time the train step of mlp, cnn or unet on both sides instead of training")
    bench("--preset", choices=list(PRESETS),
          help="benchmark shapes and steps: " + "; ".join(f"{p.name}: {p.source}" for p in PRESETS.values())
               + " (explicit flags override it)")
    bench("--warmup", type=int, help=f"untimed steps after the first (default {benchmark.WARMUP_STEPS}, or the "
                                     "preset's)")
    bench("--steps", type=int, help=f"timed steps per row (default {benchmark.TIMED_STEPS}, or the preset's)")
    bench("--tf32", action="store_true", help="TF32 on for both sides in the timed fp32 rows (GPU; default off)")
    bench("--golden", type=Path, metavar="FILE",
          help="check the side(s) against this golden file before timing (--frameworks torch needs one)")
    bench("--write-golden", type=Path, metavar="FILE",
          help="write the benchmark batch, both sides' outputs and first-step losses to FILE (.safetensors + "
               ".json) and stop, without timing")
    bench("--repeat", type=int, default=1, help="processes per row; the median one is reported")
    bench("--batch-sizes", help="comma-separated batch sizes to sweep (default: the task's batch size)")
    bench("--modes",
          help="comma-separated modes, each for the sides that have it, or side:mode for one (default all, or the "
               "preset's): " + "; ".join(f"{side}: {', '.join(m)}" for side, m in MODES.items()))
    bench("--precisions", help=f"comma-separated: {', '.join(BENCH_PRECISIONS)} (default fp32,bf16; on cuda "
                               "fp32,tf32,bf16,fp16)")
    bench("--all-combinations", action="store_true",
          help="every mode in every precision (default: bf16/fp16 only in each side's training mode)")
    add("--diagnose", type=int, metavar="K",
        help="mlp, cnn, unet: run the first K training steps on both sides from the same weights and batches and "
             "find where the twins part: every layer's outputs, gradients, updated weights and optimizer state")
    add("--in-process", action="store_true", help="run both sides in this process (for debugging)")
    add("--overwrite", action="store_true", help="allow writing into a non-empty --out folder")
    add("--resume", type=Path, metavar="RUN_DIR", help="continue a killed run from its last checkpoints, with its "
                                                       "own settings")
    return parser


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, TaskSpec | None, list[str]]:
    """The options, the task's spec and the sides to run; every inconsistency is one UserError line."""
    args = build_parser().parse_args(argv)
    if args.resume is not None:
        return args, None, []
    if args.task is None:
        raise UserError("the following arguments are required: --task (see --help)")
    sides = comma_list(args.frameworks, "--frameworks", SIDES)
    if args.threads is not None and args.threads <= 0:
        raise UserError(f"--threads must be positive, got {args.threads}")
    overrides = {flag: getattr(args, flag) for flag in SPEC_FLAGS if getattr(args, flag) is not None}
    if args.full_size:
        full_size = TASKS[args.task].full_size
        if full_size is None:
            raise UserError(f"--full-size does not apply to task {args.task!r}: it sizes the U-Net")
        overrides = {**full_size[args.variant or "padded"], **overrides}
    overrides = {**preset_overrides(args), **overrides}  # --preset's spec fields, under the explicit flags
    if args.init_weights is not None:
        overrides["init_weights"] = str(args.init_weights.resolve())  # the sides may run in another folder
    if args.recipe is not None:  # the lowest layer: --full-size and every explicit flag win over it
        overrides = {"recipe": args.recipe, **recipe_values(args.recipe), **overrides}
    spec = make_spec(args.task, **overrides)
    task = REGISTRY[spec.name]
    if getattr(spec, "init_weights", None):
        task.initial_weights(spec)  # a missing file or a mismatched tensor: one line, before any side starts
    if not spec.uses_data and (args.data_dir or args.download):
        raise UserError(f"--data-dir and --download do not apply to task {args.task!r}: it needs no dataset")
    if args.benchmark:
        check_benchmark_args(args, spec, task.trains)
    if args.seeds is not None and (args.benchmark or args.diagnose is not None or args.seed is not None):
        raise UserError("--seeds repeats a training comparison: leave out --seed, --benchmark and --diagnose")
    if args.diagnose is not None and (not task.trains or args.diagnose < 1 or len(sides) != 2):
        raise UserError(f"--diagnose K needs K >= 1, both sides and a trained task (mlp, cnn, unet), got "
                        f"--diagnose {args.diagnose} for {args.task!r} on {','.join(sides)}")
    if args.diagnose is not None and (args.benchmark or args.nproc != 1 or args.precision != "fp32"):
        raise UserError("--diagnose compares one process per side in fp32: leave out --benchmark, --nproc and "
                        "--precision")
    if args.nproc < 1:
        raise UserError(f"--nproc must be positive, got {args.nproc}")
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
    if args.data_dir is not None and not args.data_dir.exists():
        raise UserError(f"{args.data_dir}: no such folder (--data-dir)")
    return args, spec, sides


def main(argv: list[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    if argv[:1] and argv[0] in WORKER_MODES:
        status = worker_main(argv[0], argv[1], argv[2])
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)  # results are written; skip interpreter teardown, where tf.data threads can deadlock
    try:
        if "--predict" in argv:
            from shared import predict  # its own arguments: the run it predicts with holds the settings

            return predict.main(build_parser().parse_args(argv))
        args, spec, sides = parse_args(argv)
        if args.resume is not None:
            run.resume(args.resume, args.in_process)
        elif args.diagnose is not None:
            from shared import diagnose

            diagnose.run_diagnose(spec, sides, args)
        elif args.benchmark:
            benchmark_run.run_benchmark(spec, sides, args)
        elif args.seeds is not None:
            seeds.run_seeds(spec, sides, args, seeds.parse_seeds(args.seeds))
        else:
            if getattr(spec, "recipe", None):
                print(recipe_line(spec.to_dict()), flush=True)
            run.compare(spec, sides, args)
    except UserError as error:
        print(f"compare.py: error: {error}", file=sys.stderr)
        return error.exit_status
    except SideFailed as failure:
        print(f"compare.py: error: {failure}", file=sys.stderr)
        return 1
    except ParityFailed as failure:
        print(f"compare.py: error: parity failed, so no timing is reported: {failure}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
