"""The worker processes' own entry point, `python -m harness.worker ORDER` (ORDER: a WorkerOrder as JSON,
harness/jobs.py). Each side runs in a fresh process of its own (fair timing, no shared threads, clean memory
figures); the user's command line and the workers' never share a parser."""
from __future__ import annotations

import os
import sys
import traceback
import types
from collections.abc import Callable
from pathlib import Path

from harness.benchmark.rows import bench_side
from harness.benchmark.serving import infer_side
from harness.diagnose.steps import diagnose_side
from harness.jobs import RunJob, WorkerOrder, read_job
from harness.lifetime import default_signals, stop_on_sigterm, watch_parent
from harness.pair.side import pair_side
from harness.predict.run import predict_side
from harness.side_training import agree_side, run_group
from harness.surface import ARMS
from shared.errors import UserError, os_error_line


def read(order: WorkerOrder) -> dict:
    return read_job(Path(order.job))


WORK: dict[str, Callable[[WorkerOrder], object]] = {
    "train": lambda order: run_group(list(order.runs), RunJob.read(order.job)),
    "agree": lambda order: agree_side(order.side, RunJob.read(order.job)),
    "bench": lambda order: bench_side(order.side, read(order)),
    "diagnose": lambda order: diagnose_side(order.side, read(order)),
    "predict": lambda order: predict_side(order.side, read(order)),
    "infer": lambda order: infer_side(order.side, read(order)),
    "pair": lambda order: pair_side(order.side, order.job),
}


def keep_tensorflow_out() -> None:
    """TensorBoard's writer imports TensorFlow when it finds it; its own marker module says "no TensorFlow here".
    Set only in a worker whose engine is not TensorFlow (PyTorch, Keras on JAX or PyTorch): fair timing, clean
    memory, and the import boundary kept at run time (in a shared process it would hide TensorFlow from tf.summary
    too)."""
    sys.modules.setdefault("tensorboard.compat.notf", types.ModuleType("tensorboard.compat.notf"))


def main(argv: list[str]) -> int:
    """A worker process's whole life: read the order, do it, say in one line what went wrong if anything did."""
    if len(argv) != 1:
        print("usage: python -m harness.worker ORDER (started by compare.py, not by hand)", file=sys.stderr)
        return 2
    order = WorkerOrder.from_argument(argv[0])
    stop_on_sigterm()  # a worker told to stop leaves as at Ctrl-C: its last checkpoint stays
    default_signals()
    watch_parent()
    if ARMS[order.side].backend != "tensorflow":
        keep_tensorflow_out()
    if ARMS[order.side].backend in ("jax", "torch"):
        # Keras imports TensorFlow wherever it is installed (serializing a .keras file, set_random_seed); made
        # unimportable, it is "not available" and Keras takes its own no-TensorFlow path.
        sys.modules["tensorflow"] = None
    try:
        WORK[order.kind](order)
    except UserError as error:
        print(f"compare.py: error: {error}", file=sys.stderr)
        return error.exit_status
    except OSError as error:
        print(f"compare.py: error: {os_error_line(error)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception:  # noqa: BLE001 - reported here, so no live exception outlasts the worker (tf.data would hang at exit)
        traceback.print_exc()
        return 1
    return 0


if __name__ == "__main__":
    status = main(sys.argv[1:])
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)  # results are written; skip interpreter teardown, where tf.data threads can deadlock
