"""How a side executes its steps (graph mode, precision, device), as opposed to what it computes (the TaskSpec)."""
from __future__ import annotations

from dataclasses import asdict, dataclass

from shared.errors import UserError

# Each side's ways of running the same train step; the first is the one a normal training run uses.
MODES = {
    "tf": ("function", "eager", "xla"),  # tf.function graph; run_functions_eagerly; tf.function(jit_compile=True)
    "torch": ("eager", "channels_last", "compile"),  # eager autograd; NHWC memory format; torch.compile
    # The portable Keras program, model.compile(jit_compile=...) on each engine (keras_fit/runtime.py):
    "keras-tf": ("function", "xla"),  # tf.function graph; jit_compile=True (XLA)
    "keras-jax": ("jit", "eager"),  # jax.jit (Keras' default on JAX); run_eagerly=True
    "keras-torch": ("eager", "compile"),  # eager (Keras' default on PyTorch); jit_compile=True (torch.compile)
}
PRECISIONS = ("fp32", "bf16", "fp16")  # bf16/fp16: mixed precision (float32 weights, low-precision compute)
DEVICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class Execution:
    mode: str  # one of MODES[side]
    precision: str = "fp32"  # one of PRECISIONS
    device: str = "cpu"  # cpu, cuda, or auto (cuda where the side sees a GPU): runtime.configure_execution resolves it

    def check(self, side: str) -> "Execution":
        if self.mode not in MODES[side]:
            raise UserError(f"mode {self.mode!r} does not exist on the {side} side; "
                            f"choose from {', '.join(MODES[side])}")
        if self.precision not in PRECISIONS:
            raise UserError(f"precision {self.precision!r}: choose from {', '.join(PRECISIONS)}")
        if self.device not in DEVICES:
            raise UserError(f"device {self.device!r}: choose from {', '.join(DEVICES)}")
        return self

    def replace(self, **changes) -> "Execution":
        return Execution(**{**asdict(self), **changes})

    def to_dict(self) -> dict:
        return asdict(self)


def default_execution(side: str, precision: str = "fp32", device: str = "cpu") -> Execution:
    """What `compare.py` trains with unless told otherwise."""
    return Execution(MODES[side][0], precision, device)
