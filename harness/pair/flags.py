"""--pair's settings: your two files and factories, the input, the weights' direction, the mapping file, the loss and
the steps; each checked in one line before any folder or worker exists, for the command line and for check_pair."""
from __future__ import annotations

import argparse
import ast
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from harness.benchmark.rows import TIMED_STEPS, WARMUP_STEPS
from harness.pair.mapping import read_pins
from harness.paths import absolute
from shared.errors import UserError
from shared.pair_layouts import LAYOUTS

LOSSES = ("sum_squares", "mse", "bce", "ce")
STEPS = 5  # SGD steps measured against the 1-ulp controls (--steps)
LR = 1e-3  # their learning rate (--lr): small, as the default loss sums squares over every output
SEED = 0  # the random input's and both factories' seed (--seed)
MAX_STEPS = 10_000
SOURCES = {"torch": "torch", "keras": "tf"}  # --from: whose weights both sides get
# compare.py's flags that mean nothing to a pair, refused by name (their defaults are None or False); the
# benchmark's own that a pair's (one model, one batch, each side's training mode, fp32) does not take.
REFUSED = ("task", "diagnose", "seeds", "data_dir", "download", "epochs", "batch_size", "sample_size",
           "image_size", "init_weights", "recipe", "resume", "preset", "batch_sizes", "modes", "precisions", "tf32",
           "golden", "write_golden", "profile", "all_combinations")


@dataclass(frozen=True)
class PairConfig:
    keras: tuple[Path, str]  # your Keras file and the function or class in it that returns the model
    torch: tuple[Path, str]
    input_shape: tuple[int, ...]  # PyTorch's layout (N, C, *S)
    keras_layout: str | None  # None: detected from the Keras model's input and first layer
    input: Path | None  # your batch (.npy, PyTorch's layout); None: seeded normal values
    source: str  # "torch" or "tf": whose weights both sides get
    zero_unmatched_bias: bool
    mapping: Path | None
    loss: str
    target: Path | None
    steps: int
    lr: float
    seed: int
    threads: int
    out: Path | None
    overwrite: bool
    in_process: bool
    benchmark: bool = False  # --benchmark: both sides' training step timed behind the parity gate
    inference: bool = False  # --inference: their forward pass in inference mode too
    warmup: int = WARMUP_STEPS  # the benchmark's untimed steps after the first
    benchmark_steps: int = TIMED_STEPS  # its timed steps (--steps with --benchmark)
    repeat: int = 1  # fresh processes per side, alternating; the median one is reported

    def to_dict(self) -> dict:
        found = {key: str(value) if isinstance(value, Path) else value for key, value in asdict(self).items()}
        found.update(keras=f"{self.keras[0]}:{self.keras[1]}", torch=f"{self.torch[0]}:{self.torch[1]}",
                     source="PyTorch" if self.source == "torch" else "Keras")
        return found


def add_flags(parser: argparse.ArgumentParser) -> None:
    pair = parser.add_argument_group("your own pair (--pair)").add_argument
    pair("--pair", nargs=2, metavar=("KERAS_FILE:FACTORY", "TORCH_FILE:FACTORY"),
         help="check your Keras model against your PyTorch port: weights mapped, every layer compared in float32 and "
              "float64, gradients, SGD steps against each side's 1-ulp control (docs/pair.md)")
    pair("--input-shape", metavar="N,C,H,W", help="--pair: the input's shape in PyTorch's layout (seeded random "
                                                  "values)")
    pair("--input", type=Path, metavar="FILE.npy", help="--pair: your own batch, in PyTorch's layout")
    pair("--keras-layout", choices=LAYOUTS, help="--pair: how the Keras model takes the input (default: detected)")
    pair("--from", dest="pair_from", choices=list(SOURCES), default="torch",
         help="--pair: whose weights both models get (default torch)")
    pair("--zero-unmatched-bias", action="store_true",
         help="--pair: a bias one side alone has is set to zero (the same network) instead of stopping the check")
    pair("--mapping", type=Path, metavar="FILE.json", help='--pair: pin pairs by name, {"keras_layer": "torch.module"}')
    pair("--loss", choices=LOSSES, help="--pair: the loss of the gradients and steps (default sum_squares: the sum of "
                                        "squared outputs; mse, bce and ce need --target)")
    pair("--target", type=Path, metavar="FILE.npy", help="--pair: the loss's target, in PyTorch's layout")


def factory_spec(text: str, side: str) -> tuple[Path, str]:
    """"models/net.py:build" -> (the absolute file, the factory); the file must exist and define the name."""
    file, _, name = str(text).rpartition(":")
    if not file or not name.isidentifier():
        raise UserError(f"--pair {text!r}: expected FILE:FACTORY, the {side} file and the function or class in it "
                        "that returns the model (models/net.py:build)")
    path = absolute(file)
    if not path.is_file():
        raise UserError(f"{path}: {'a folder, not a Python file' if path.is_dir() else 'no such file'} (the {side} "
                        "file --pair names)")
    check_defined(path, name, side)
    return path, name


def check_defined(path: Path, name: str, side: str) -> None:
    """The factory is bound at the file's top level (def, class, assignment, import), read without running it;
    a file that imports * is left to its worker."""
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    except SyntaxError as error:
        raise UserError(f"{path}:{error.lineno}: not valid Python ({error.msg})") from None
    except (OSError, UnicodeDecodeError) as error:
        raise UserError(f"{path}: cannot be read ({error})") from None
    bound: set[str] = set()
    statements = list(tree.body)
    while statements:
        node = statements.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            bound.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            bound |= {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            if any(alias.name == "*" for alias in node.names):
                return
            bound |= {(alias.asname or alias.name).split(".")[0] for alias in node.names}
        elif isinstance(node, (ast.If, ast.Try, ast.With, ast.For, ast.While)):
            statements += [s for part in ("body", "orelse", "finalbody", "handlers") for s in getattr(node, part, [])]
        elif isinstance(node, ast.ExceptHandler):
            statements += node.body
    if name not in bound:
        defined = sorted(n for n in bound if not n.startswith("_"))[:8]
        raise UserError(f"{path}: defines no {name!r} (the {side} factory --pair names); it defines "
                        f"{', '.join(defined) or 'nothing at its top level'}")


def parse_shape(text: str | tuple | list) -> tuple[int, ...]:
    try:
        shape = tuple(int(n) for n in (text.split(",") if isinstance(text, str) else text))
    except ValueError:
        shape = ()
    if len(shape) < 2 or min(shape) < 1:
        raise UserError(f"--input-shape {text!r}: expected at least two positive sizes in PyTorch's layout, N,C,H,W "
                        "(2,3,64,64)")
    return shape


def read_array(path: Path, flag: str) -> np.ndarray:
    try:
        array = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise UserError(f"{path}: no such file ({flag})") from None
    except (OSError, ValueError) as error:
        raise UserError(f"{path}: not a readable .npy array ({flag}: {error})") from None
    if not isinstance(array, np.ndarray) or array.dtype.kind not in "biuf":
        raise UserError(f"{path}: expected one numeric array ({flag})")
    if array.dtype.kind == "f" and not np.all(np.isfinite(array)):
        raise UserError(f"{path}: holds NaN or infinite values ({flag})")
    return array


def make_config(keras: str, torch: str, input_shape=None, *, keras_layout: str | None = None, input=None,
                source: str = "torch", zero_unmatched_bias: bool = False, mapping=None, loss: str | None = None,
                target=None, steps: int | None = None, lr: float | None = None, seed: int | None = None,
                threads: int | None = None, out=None, overwrite: bool = False, in_process: bool = False,
                benchmark: bool = False, inference: bool = False, warmup: int | None = None,
                benchmark_steps: int | None = None, repeat: int | None = None) -> PairConfig:
    """Every setting checked, every path made absolute (the workers start in the checkout)."""
    keras_spec, torch_spec = factory_spec(keras, "Keras"), factory_spec(torch, "PyTorch")
    given = None if input is None else read_array(absolute(input), "--input")
    if input_shape is None and given is None:
        raise UserError("--pair needs --input-shape N,C,H,W (PyTorch's layout) or --input FILE.npy")
    shape = tuple(given.shape) if input_shape is None else parse_shape(input_shape)
    if given is not None and tuple(given.shape) != shape:
        raise UserError(f"{absolute(input)}: its shape {tuple(given.shape)} is not --input-shape {shape}")
    loss = loss or "sum_squares"
    if (loss == "sum_squares") != (target is None):
        raise UserError(f"--loss {loss}: " + ("needs --target FILE.npy" if target is None else
                                              "the sum of squared outputs takes no --target (mse, bce, ce do)"))
    if target is not None:
        found = read_array(absolute(target), "--target")
        if loss == "ce" and not np.array_equal(found, np.round(found)):
            raise UserError(f"{absolute(target)}: --loss ce needs integer class indices")
    if keras_layout not in (None, *LAYOUTS):
        raise UserError(f"--keras-layout {keras_layout!r}: choose from {', '.join(LAYOUTS)}")
    if source not in (*SOURCES, *SOURCES.values()):
        raise UserError(f"--from {source!r}: choose from {', '.join(SOURCES)}")
    steps, lr, seed = STEPS if steps is None else steps, LR if lr is None else lr, SEED if seed is None else seed
    if not 1 <= steps <= MAX_STEPS:
        raise UserError(f"--steps must lie in [1, {MAX_STEPS}] for --pair, got {steps}")
    if not (math.isfinite(lr) and lr > 0):
        raise UserError(f"--lr must be a positive finite number, got {lr}")
    if seed < 0:
        raise UserError(f"--seed must be 0 or more, got {seed}")
    read_pins(None if mapping is None else absolute(mapping))  # a broken file is refused before any work
    timing = benchmark_settings(benchmark, inference, warmup, benchmark_steps, repeat)
    return PairConfig(keras_spec, torch_spec, shape, keras_layout, None if input is None else absolute(input),
                      SOURCES.get(source, source), zero_unmatched_bias, None if mapping is None else absolute(mapping),
                      loss, None if target is None else absolute(target), steps, lr, seed,
                      max(1, threads or 1), None if out is None else absolute(out), overwrite, in_process, **timing)


def benchmark_settings(benchmark: bool, inference: bool, warmup: int | None, steps: int | None,
                       repeat: int | None) -> dict:
    """--benchmark's warm-up, timed steps and processes per side (the benchmark's defaults), checked."""
    if not benchmark:
        given = [flag for flag, value in (("--inference", inference), ("--warmup", warmup is not None),
                                          ("--repeat", repeat not in (None, 1))) if value]
        if given:
            raise UserError(f"{', '.join(given)} time{'s' if len(given) == 1 else ''} the pair: give --benchmark too")
        return {}
    found = {"warmup": WARMUP_STEPS if warmup is None else warmup,
             "benchmark_steps": TIMED_STEPS if steps is None else steps, "repeat": 1 if repeat is None else repeat}
    for flag, value, least in (("--warmup", found["warmup"], 0), ("--steps", found["benchmark_steps"], 1),
                               ("--repeat", found["repeat"], 1)):
        if value < least or value > MAX_STEPS:
            raise UserError(f"{flag} must lie in [{least}, {MAX_STEPS}] for --pair --benchmark, got {value}")
    return {"benchmark": True, "inference": bool(inference), **found}


def config_from_args(args: argparse.Namespace) -> PairConfig:
    """compare.py --pair ...: the flags that mean nothing to a pair refused, the rest checked."""
    refused = [f"--{name.replace('_', '-')}" for name in REFUSED if getattr(args, name, None) not in (None, False)]
    if refused:
        raise UserError(f"--pair checks your own two models: leave out {', '.join(refused)}")
    benchmark = bool(getattr(args, "benchmark", False))  # with it, --steps counts the timed steps
    return make_config(*args.pair, args.input_shape, keras_layout=args.keras_layout, input=args.input,
                       source=args.pair_from, zero_unmatched_bias=args.zero_unmatched_bias, mapping=args.mapping,
                       loss=args.loss, target=args.target, steps=None if benchmark else args.steps, lr=args.lr,
                       seed=args.seed, threads=args.threads, out=args.out, overwrite=args.overwrite,
                       in_process=args.in_process, benchmark=benchmark, inference=getattr(args, "inference", False),
                       warmup=getattr(args, "warmup", None), benchmark_steps=args.steps if benchmark else None,
                       repeat=getattr(args, "repeat", None))


def check_unused(args: argparse.Namespace) -> None:
    """--input-shape and its kin without --pair: one line, not silently ignored."""
    given = [flag for flag, value in (("--input-shape", args.input_shape), ("--input", args.input),
                                      ("--keras-layout", args.keras_layout), ("--mapping", args.mapping),
                                      ("--loss", args.loss), ("--target", args.target),
                                      ("--zero-unmatched-bias", args.zero_unmatched_bias)) if value]
    if given:
        raise UserError(f"{', '.join(given)} belong to --pair: give it, or leave them out")
