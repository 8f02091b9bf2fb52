"""Shared by the figure modules: paths from the repository root, saving, empty panels."""

from __future__ import annotations

from pathlib import Path

from matplotlib.axes import Axes
from matplotlib.figure import Figure

REPO = Path(__file__).resolve().parents[2]


def resolve(path: str | Path) -> Path:
    """``path`` as given if it exists, else relative to the repository root.

    Notebooks opened from ``notebooks/`` run there, not at the root the defaults refer to.
    """
    path = Path(path).expanduser()
    if path.exists() or path.is_absolute():
        return path
    in_repo = REPO / path
    return in_repo if in_repo.exists() else path


def no_data(ax: Axes, title: str, what: str = "not logged") -> None:
    """Title a panel without data and say so in it (instead of failing)."""
    ax.set_title(f"{title} ({what})")
    ax.text(0.5, 0.5, what, ha="center", va="center", transform=ax.transAxes, color="grey")


def save(fig: Figure, fig_dir: str | Path, name: str, dpi: int = 110) -> Path:
    """Write ``fig`` to ``fig_dir/name.png`` (folders made); returns the path."""
    fig_dir = Path(fig_dir)
    fig_dir.mkdir(parents=True, exist_ok=True)
    path = fig_dir / f"{name}.png"
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    return path
