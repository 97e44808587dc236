"""matplotlib for files only: its pyplot without a window, and figures saved atomically as PNG."""
from __future__ import annotations

from pathlib import Path

from shared.atomic import atomic_path


def pyplot():
    """matplotlib.pyplot on the Agg backend; imported on first use, since most processes draw nothing."""
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    return plt


def save_figure(figure, path: Path) -> Path:
    """Save a matplotlib figure atomically as PNG and close it."""
    plt = pyplot()
    try:
        with atomic_path(path, suffix=".png") as temporary:
            figure.savefig(temporary, dpi=110, bbox_inches="tight")
    finally:
        plt.close(figure)
    return Path(path)
