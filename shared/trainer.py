"""The U-Net's task surface around each side's CarvanaClassifier, the source text's trainer class: its train step
on its own (the benchmark times it) and its training run; each side binds its own class (classifier.py)."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from shared.execution import Execution
from shared.loaders import Loaders
from shared.tasks import UNetSpec


def make_train_step(classifier: type, model: Any, optimizer: Any, spec: UNetSpec,
                    execution: Execution | None = None) -> Callable[[Any, Any], float]:
    """One step of the classifier on a batch of tensors; returns the loss."""
    trainer = classifier(model, 1, spec, verbose=False, execution=execution, optimizer=optimizer)
    return lambda images, masks: trainer.train_step(images, masks)[0]


def train(classifier: type, model: Any, spec: UNetSpec, loaders: Loaders, callbacks: list | None = None,
          checkpoint_dir: Any = None, execution: Execution | None = None, verbose: bool = True) -> dict:
    """`classifier(net, epochs).train(train_loader, valid_loader, epochs, callbacks)` for spec.epochs."""
    trainer = classifier(model, spec.epochs, spec, verbose, checkpoint_dir, execution)
    history = trainer.train(loaders.train, loaders.valid, spec.epochs, callbacks)
    return {"history": history, "batch_losses": trainer.batch_losses, "batch_lrs": trainer.batch_lrs,
            "timing": trainer.timing, "traces": trainer.traces, **trainer.graph}
