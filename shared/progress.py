"""Console output both training loops share: the source text's log line and a tqdm progress bar."""
from __future__ import annotations

import sys

from tqdm.auto import tqdm


def train_log_line(epoch: int, seen: int, total: int, batch_index: int, batches: int, loss: float) -> str:
    """The source text's format: Train Epoch: 1 [2000/60000 (3%)]\tLoss: 0.123456."""
    return "Train Epoch: {} [{}/{} ({:.0f}%)]\tLoss: {:.6f}".format(
        epoch, seen, total, 100.0 * batch_index / batches, loss)


def test_log_line(loss: float, correct: int, total: int) -> str:
    return "Test set: Average loss: {:.4f}, Accuracy: {}/{} ({:.2f}%)".format(
        loss, correct, total, 100.0 * correct / total)


class Progress:
    """A per-epoch progress bar on stderr with the latest metrics; silent when verbose is False."""

    def __init__(self, verbose: bool = True, side: str = ""):
        self.verbose = verbose
        self.side = side
        self.bar = None

    def start_epoch(self, epoch: int, epochs: int, batches: int) -> None:
        if self.verbose:
            self.bar = tqdm(total=batches, desc=f"{self.side} epoch {epoch}/{epochs}", file=sys.stderr,
                            leave=False, dynamic_ncols=True, disable=None)  # no bar when not a terminal

    def update(self, **metrics: float) -> None:
        if self.bar is not None:
            self.bar.set_postfix({k: f"{v:.4f}" for k, v in metrics.items()}, refresh=False)
            self.bar.update(1)

    def write(self, line: str) -> None:
        if self.verbose:
            (self.bar or tqdm).write(line, file=sys.stdout)

    def end_epoch(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
