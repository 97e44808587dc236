"""What each side offers the harness, the benchmark and the tests, as typed protocols (a trained task; the neuron
and autograd lessons; the runtime), and `open_surface`, which assembles one side's surface for one task from its
modules. Nothing here imports a framework: the side's package is imported by name, when asked for."""
from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Callable, Protocol, runtime_checkable

import numpy as np

from shared.execution import Execution
from shared.loaders import Loaders
from shared.tasks import TaskSpec
from shared.weights import Weights


@dataclass(frozen=True)
class Arm:
    """One way to run the trained tasks, a "side" to the harness: a framework's own API (tf: Keras models trained by
    a hand-written tf.function step; torch: nn.Modules and the eager loop), or the portable Keras program trained by
    model.compile and model.fit on one of Keras 3's engines (keras-tf, keras-jax, keras-torch)."""

    name: str
    title: str  # in reports
    package: str  # its training, runtime, callbacks and benchmark modules
    models: str  # its model files (mlp.py, cnn.py, unet.py) and weights.py
    backend: str | None  # KERAS_BACKEND, set in its process before Keras is imported; None: Keras is not used
    color: str  # in every plot

    @property
    def native(self) -> bool:
        """Written in the framework's own API: the two sides of the lessons, distribution and diagnosis."""
        return self.name in NATIVE


ARMS: dict[str, Arm] = {arm.name: arm for arm in (
    Arm("tf", "TensorFlow", "tf_impl", "keras_models", "tensorflow", "tab:orange"),
    Arm("torch", "PyTorch", "torch_impl", "torch_impl", None, "tab:blue"),
    Arm("keras-tf", "Keras on TensorFlow", "keras_fit", "keras_models", "tensorflow", "tab:red"),
    Arm("keras-jax", "Keras on JAX", "keras_fit", "keras_models", "jax", "tab:green"),
    Arm("keras-torch", "Keras on PyTorch", "keras_fit", "keras_models", "torch", "tab:purple"),
)}
NATIVE = ("tf", "torch")
SIDES = tuple(ARMS)
PACKAGES = {name: arm.package for name, arm in ARMS.items()}


@runtime_checkable
class TrainedTask(Protocol):
    """A trained task (mlp, cnn, unet) on one side. Images are canonical NHWC float32 numpy; weights canonical."""

    def build(self, spec: TaskSpec) -> Any:
        """The framework's own model object, its weights created (the canonical ones are loaded next)."""

    def load_weights(self, model: Any, canonical: Weights) -> None: ...

    def export_weights(self, model: Any) -> Weights: ...

    def count_parameters(self, model: Any) -> int: ...

    def forward(self, model: Any, images: np.ndarray) -> np.ndarray:
        """The model's output in evaluation mode, as numpy in the canonical layout."""

    def gradients(self, model: Any, images: np.ndarray, targets: np.ndarray) -> tuple[float, Weights]:
        """The loss of one batch in training mode, and d(loss)/d(parameter) by canonical name."""

    def loss(self, outputs: Any, targets: Any, /) -> Any:
        """The task's loss on framework tensors (NLL of log-probabilities; BCE + soft Dice of logits)."""

    def to_tensors(self, images: np.ndarray, targets: np.ndarray, execution: Execution) -> tuple[Any, Any]:
        """A numpy batch as the framework's tensors, in its layout, on the execution's device."""

    def make_optimizer(self, model: Any, spec: TaskSpec) -> Any: ...

    def make_train_step(self, model: Any, optimizer: Any, spec: TaskSpec,
                        execution: Execution | None = None) -> Callable[[Any, Any], Any]:
        """One optimisation step on a batch of tensors; returns the loss (float() of it waits for the device)."""

    def make_loader(self, dataset: Any, batch_size: int, seed: int, shuffle: bool, workers: int = 0) -> Any:
        """The framework's loader over a shared numpy dataset, in the batch order both sides share."""

    def train(self, model: Any, spec: TaskSpec, loaders: Loaders, callbacks: list | None = None,
              checkpoint_dir: Any = None, execution: Execution | None = None, verbose: bool = True) -> dict:
        """The twinned training loop: returns history, batch_losses, timing and traces (graphs traced)."""

    def predict(self, model: Any, images: np.ndarray) -> np.ndarray:
        """Predicted classes (mlp, cnn) or mask probabilities (unet)."""


@runtime_checkable
class NeuronLesson(Protocol):
    """One sigmoid neuron fitted by gradient descent."""

    def build(self, spec: TaskSpec) -> Any: ...

    def gradients(self, model: Any, phi: float, target: float) -> tuple[float, float]: ...

    def train(self, spec: TaskSpec) -> dict: ...


@runtime_checkable
class AutogradLesson(Protocol):
    """Tensors, automatic differentiation and the graph the framework builds (autograd.py), and the side going static
    or dynamic with the tf.function pitfalls counted (graph_modes.py); harness/tasks/lessons.py assembles them."""

    NOTES: list[str]  # what the side's dialect says about its graphs, in sentences for the report

    def tensor_basics(self, seed: int) -> dict: ...

    def gradient(self, x_value: float, shape: tuple) -> dict:
        """x, z = 2x^2 + 5x and dz/dx (4x + 5) by backpropagating ones."""

    def gradient_of_constant(self, x_value: float, shape: tuple) -> dict: ...

    def graph(self, x_value: float, shape: tuple) -> str:
        """The graph of z as text: TensorFlow's traced ops, PyTorch's grad_fn chain."""

    def graphs_per_call(self, x_value: float, shapes: list[tuple]) -> dict: ...

    def control_flow(self, x_value: float, shape: tuple) -> dict: ...

    def graph_drawings(self, x_value: float, shape: tuple) -> dict: ...

    def going_static(self, x_value: float, shape: tuple) -> dict:
        """The Python `if` of `branch` in a static graph; its "drawings" join graph_drawings'."""

    def going_dynamic(self, x_value: float, shape: tuple) -> dict: ...

    def pitfalls(self, x_value: float, shape: tuple, digits: Any) -> dict:
        """The tf.function pitfalls counted; digits: shared.graph_lessons.DigitsEpoch, the mlp's real epoch."""


@runtime_checkable
class Runtime(Protocol):
    """Threads, seeds, devices and versions of one side's process."""

    def configure(self, threads: int, seed: int) -> None: ...

    def configure_execution(self, execution: Execution) -> Execution: ...

    def training_execution(self, execution: Execution, spec: TaskSpec) -> Execution: ...

    def versions(self) -> dict: ...

    def threads(self) -> int: ...


@dataclass(frozen=True)
class ModuleTask:
    """A trained task on one arm, member by member from its modules: the model's own module (mlp.py, cnn.py, unet.py)
    builds it, weights.py converts its weights (both from the arm's models package), and its trainer module (train.py
    or classifier.py) does the rest, building the model too where it trains it on its framework's own kernels
    (tf_impl/classifier.py). Each member is the side's own function, named where `of` picks it."""

    build: Callable
    load_weights: Callable
    export_weights: Callable
    count_parameters: Callable
    forward: Callable
    gradients: Callable
    loss: Callable
    to_tensors: Callable
    make_optimizer: Callable
    make_train_step: Callable
    make_loader: Callable
    train: Callable
    predict: Callable

    @classmethod
    def of(cls, arm: Arm, model_module: str, trainer_module: str) -> ModuleTask:
        model = importlib.import_module(f"{arm.models}.{model_module}")
        weights = importlib.import_module(f"{arm.models}.weights")
        trainer = importlib.import_module(f"{arm.package}.{trainer_module}")
        return cls(build=getattr(trainer, "build", model.build), load_weights=weights.load_weights,
                   export_weights=weights.export_weights,
                   count_parameters=weights.count_parameters, forward=trainer.forward, gradients=trainer.gradients,
                   loss=trainer.loss, to_tensors=trainer.to_tensors, make_optimizer=trainer.make_optimizer,
                   make_train_step=trainer.make_train_step, make_loader=trainer.make_loader, train=trainer.train,
                   predict=trainer.predict)


@dataclass(frozen=True)
class Surface:
    """One side (an arm), opened for one task: `side` is its name ("tf", "keras-jax"), `task` what it does for it."""

    side: str
    runtime: Runtime
    task: TrainedTask | NeuronLesson | AutogradLesson

    def training_model(self, spec: TaskSpec, model: Any, initial: Weights, execution: Execution | None) -> Any:
        """The model to train: the probed float32 one, or under mixed precision the same weights in a model built
        again (TensorFlow fixes a model's dtype policy when it builds it)."""
        if execution is None or execution.precision == "fp32":
            return model
        self.runtime.configure_execution(execution)
        model = self.task.build(spec)
        self.task.load_weights(model, initial)
        return model

    def module(self, name: str) -> ModuleType:
        """One of the side's modules by its twinned name (callbacks, benchmark, distributed)."""
        return importlib.import_module(f"{PACKAGES[self.side]}.{name}")


@dataclass(frozen=True)
class NeuronModules:
    """The neuron lesson on one side: its neuron.py."""

    build: Callable
    gradients: Callable
    train: Callable

    @classmethod
    def of(cls, package: str) -> NeuronModules:
        neuron = importlib.import_module(f"{package}.neuron")
        return cls(build=neuron.build, gradients=neuron.gradients, train=neuron.train)


@dataclass(frozen=True)
class AutogradModules:
    """The autograd lesson on one side: tensors, gradients and graphs from its autograd.py, the side going static or
    dynamic and the tf.function pitfalls from its graph_modes.py."""

    NOTES: list[str]
    tensor_basics: Callable
    gradient: Callable
    gradient_of_constant: Callable
    graph: Callable
    graphs_per_call: Callable
    control_flow: Callable
    graph_drawings: Callable
    going_static: Callable
    going_dynamic: Callable
    pitfalls: Callable

    @classmethod
    def of(cls, package: str) -> AutogradModules:
        autograd = importlib.import_module(f"{package}.autograd")
        modes = importlib.import_module(f"{package}.graph_modes")
        return cls(NOTES=autograd.NOTES, tensor_basics=autograd.tensor_basics, gradient=autograd.gradient,
                   gradient_of_constant=autograd.gradient_of_constant, graph=autograd.graph,
                   graphs_per_call=autograd.graphs_per_call, control_flow=autograd.control_flow,
                   graph_drawings=autograd.graph_drawings, going_static=modes.going_static,
                   going_dynamic=modes.going_dynamic, pitfalls=modes.pitfalls)


def open_surface(side: str, spec: TaskSpec, trainer: str | None, lesson: type | None = None) -> Surface:
    """The side's surface for the task: a ModuleTask for a trained task (trainer names its trainer module), else the
    lesson's modules (NeuronModules, AutogradModules)."""
    arm = ARMS[side]
    runtime = importlib.import_module(f"{arm.package}.runtime")
    task = ModuleTask.of(arm, spec.name, trainer) if trainer is not None else lesson.of(arm.package)
    return Surface(side, runtime, task)


def protocol_mismatches(implementation: object, protocol: type) -> list[str]:
    """Where an implementation departs from a protocol: missing members, and members that cannot be called the
    protocol's way (its parameters by name and in order, positional-only ones by position; further parameters
    need defaults). A test holds each side to this, so the harness can call both the same way."""
    problems = []
    for name, member in inspect.getmembers(protocol, inspect.isfunction):
        if name.startswith("_"):
            continue
        if not hasattr(implementation, name):
            problems.append(f"{name}: missing")
            continue
        wanted = [p for p in inspect.signature(member).parameters.values() if p.name != "self"]
        found = list(inspect.signature(getattr(implementation, name)).parameters.values())
        named = [p.name if p.kind != p.POSITIONAL_ONLY else found[i].name if i < len(found) else p.name
                 for i, p in enumerate(wanted)]
        extra_without_default = [p.name for p in found[len(wanted):] if p.default is p.empty]
        if [p.name for p in found[:len(wanted)]] != named or extra_without_default:
            problems.append(f"{name}: parameters {[p.name for p in found]}, expected {[p.name for p in wanted]}")
    return problems
