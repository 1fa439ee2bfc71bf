"""Figure helpers shared by the evaluators and the diagnostics: matplotlib without a display, atomic PNGs."""

from __future__ import annotations

from typing import Any


def savefig(fig, path) -> Any:
    """Save a matplotlib figure as PNG (atomically) and close it."""
    import os
    import tempfile
    from pathlib import Path

    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".png", dir=path.parent)
    os.close(fd)
    fig.savefig(tmp, dpi=90, bbox_inches="tight")
    plt.close(fig)
    os.replace(tmp, path)
    return path


def plt():
    """matplotlib.pyplot with the non-interactive Agg backend."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as pyplot

    return pyplot


def boxplot(ax, data, labels=None, **kwargs):
    """``ax.boxplot`` with tick labels, across matplotlib versions (``labels`` was renamed)."""
    parts = ax.boxplot([list(d) for d in data], **kwargs)
    if labels is not None:
        positions = kwargs.get("positions") or range(1, len(data) + 1)
        ax.set_xticks(list(positions))
        ax.set_xticklabels(labels)
    return parts
