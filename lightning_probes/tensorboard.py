"""Rendering for TensorBoard (pictures as uint8 arrays, markdown tables) and the one merged dashboard layout.

Pictures are drawn with matplotlib's object API on an Agg canvas (no pyplot, no global backend change), so they
work headless and never disturb a user's own plotting. Without matplotlib, pictures are skipped (the monitor says
so once) and scalars still flow.
"""

from __future__ import annotations

import io
import time
import weakref
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

__all__ = [
    "bar_image",
    "drawing",
    "drawing_seconds",
    "figure_png",
    "has_matplotlib",
    "heatmap_image",
    "line_figure",
    "line_image",
    "markdown_table",
    "merge_layouts",
    "write_layout_once",
]

# writers whose custom-scalars layout has been written (weak: a closed writer is forgotten)
_LAYOUT_WRITTEN: weakref.WeakSet = weakref.WeakSet()


class _DrawingClock:
    """Seconds spent drawing pictures in this process. A time budget needs a probe's pictures apart from its
    measurement: they come on some probes only and often cost ten times the rest (the spectrum: ~0.2 s vs 9 ms)."""

    seconds = 0.0
    depth = 0  # nested drawing() blocks count once


@contextmanager
def drawing() -> Iterator[None]:
    """Count the time of the block (or, as ``@drawing()``, of each call) as picture drawing (see
    :func:`drawing_seconds`); nested blocks count once.

    Example:
        >>> before = drawing_seconds()
        >>> with drawing():
        ...     with drawing():
        ...         _ = sum(range(1000))
        >>> drawing_seconds() > before
        True
    """
    _DrawingClock.depth += 1
    start = time.perf_counter()
    try:
        yield
    finally:
        _DrawingClock.depth -= 1
        if _DrawingClock.depth == 0:
            _DrawingClock.seconds += time.perf_counter() - start


def drawing_seconds() -> float:
    """Total seconds spent inside :func:`drawing` blocks so far (every picture helper here is one)."""
    return _DrawingClock.seconds


def has_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _figure(width: float = 5.0, height: float = 3.6, right: float = 0.96, title: str = "") -> Any:
    from matplotlib.figure import Figure

    # fixed margins that fit a title, axis labels and tick labels at this size: matplotlib's constrained layout would
    # fit them itself but took a third of each picture's time (a spectrum plot: 127 ms with it, 86 ms without)
    fig = Figure(figsize=(width, height), dpi=80)
    # each extra title line takes ~0.2 inch off the top, so a two-line title is not cut off at the picture's edge
    fig.subplots_adjust(left=0.16, right=right, bottom=0.15, top=0.9 - 0.2 * title.count("\n") / height)
    return fig


def _to_array(fig: Any) -> np.ndarray:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()  # (H, W, 3) uint8


def line_figure(
    series: Mapping[str, tuple[ArrayLike, ArrayLike]], title: str, xlabel: str = "", ylabel: str = "",
    logy: bool = False, logx: bool = False, hlines: Mapping[str, float] | None = None,
    vlines: Mapping[str, float] | None = None, ymin: float | None = None, size: tuple[float, float] = (5.0, 3.6),
) -> Any:
    """The line chart of named ``(x, y)`` series as a matplotlib Figure (Agg, no pyplot): the one line-chart routine
    behind the TensorBoard pictures (:func:`line_image`) and the HTML report's charts (:func:`figure_png`).
    ``ymin`` clips the y axis from below (on a log axis, values far under what matters would squash the rest into a
    band); ``size`` is (width, height) in inches.

    Example:
        >>> fig = line_figure({"loss": ([0, 10, 20], [1.0, 0.4, 0.2])}, "loss", xlabel="step")
        >>> figure_png(fig)[1:4]  # the PNG signature
        b'PNG'
    """
    fig = _figure(width=size[0], height=size[1], title=title)
    ax = fig.add_subplot()
    for label, (x, y) in series.items():
        xs, ys = np.asarray(x), np.asarray(y)
        ax.plot(xs, ys, marker="." if len(xs) < 60 else None, label=label)
    for label, level in (hlines or {}).items():
        ax.axhline(level, color="grey", linestyle="--", linewidth=1, label=label)
    for label, pos in (vlines or {}).items():
        ax.axvline(pos, color="black", linestyle=":", linewidth=1, label=label)
    if logy:
        ax.set_yscale("log")
    if logx:
        ax.set_xscale("log")
    if ymin is not None:
        ax.set_ylim(bottom=ymin)
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    ax.grid(alpha=0.3)
    if len(series) + len(hlines or {}) + len(vlines or {}) > 1:
        ax.legend(fontsize="small")
    return fig


@drawing()
def line_image(
    series: Mapping[str, tuple[ArrayLike, ArrayLike]], title: str, xlabel: str = "", ylabel: str = "",
    logy: bool = False, logx: bool = False, hlines: Mapping[str, float] | None = None,
    vlines: Mapping[str, float] | None = None, ymin: float | None = None,
) -> np.ndarray:
    """:func:`line_figure` as an (H, W, 3) uint8 image, for TensorBoard.

    Example:
        >>> img = line_image({"a": ([1, 2, 3], [1.0, 0.5, 0.1])}, "spectrum", logy=True)
        >>> img.dtype, img.ndim, img.shape[2]
        (dtype('uint8'), 3, 3)
    """
    return _to_array(line_figure(series, title, xlabel, ylabel, logy, logx, hlines, vlines, ymin))


def figure_png(fig: Any) -> bytes:
    """A matplotlib Figure rendered to PNG bytes (Agg), for pages that embed pictures (the HTML report)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    buffer = io.BytesIO()
    FigureCanvasAgg(fig).print_png(buffer)
    return buffer.getvalue()


@drawing()
def heatmap_image(
    matrix: Any, title: str, vmin: float | None = None, vmax: float | None = None, cmap: str = "RdBu_r",
    xlabel: str = "", ylabel: str = "", colorbar_label: str = "", xticklabels: Sequence[str] | None = None,
    yticklabels: Sequence[str] | None = None,
) -> np.ndarray:
    """A matrix as a heatmap with a colour scale, (H, W, 3) uint8. ``xticklabels`` / ``yticklabels`` name the
    columns / rows (one label each; with many rows only every k-th is written, so they stay legible).

    Example:
        >>> heatmap_image(np.eye(4), "cosines", vmin=-1, vmax=1).shape[2]
        3
        >>> heatmap_image(np.eye(2), "IoU", xticklabels=["1", "2"], yticklabels=["unit 3", "unit 7"]).ndim
        3
    """
    fig = _figure(4.8, 4.0, right=0.9, title=title)  # room for the colour bar's label
    ax = fig.add_subplot()
    values = np.asarray(matrix, dtype=float)
    mesh = ax.imshow(values, vmin=vmin, vmax=vmax, cmap=cmap, interpolation="nearest", aspect="auto")
    fig.colorbar(mesh, ax=ax, label=colorbar_label)
    for labels, axis, n in ((xticklabels, ax.xaxis, values.shape[1]), (yticklabels, ax.yaxis, values.shape[0])):
        if labels is not None:
            every = max(1, int(np.ceil(len(labels) / 16)))  # at most 16 labels an axis
            ticks = np.arange(0, n, every)
            axis.set_ticks(ticks, [str(labels[int(i)]) for i in ticks], fontsize="small")
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    return _to_array(fig)


@drawing()
def bar_image(
    labels: Sequence[str], groups: Mapping[str, Sequence[float]], title: str, ylabel: str = ""
) -> np.ndarray:
    """Grouped bar chart (one bar per group and label), (H, W, 3) uint8.

    Example:
        >>> bar_image(["1", "2"], {"layer1": [0.5, 0.2]}, "completeness").ndim
        3
    """
    fig = _figure(title=title)
    ax = fig.add_subplot()
    width = 0.8 / max(len(groups), 1)
    x = np.arange(len(labels))
    for i, (name, heights) in enumerate(groups.items()):
        ax.bar(x + i * width - 0.4 + width / 2, np.asarray(heights, dtype=float), width, label=name)
    ax.set_xticks(x, list(labels))
    ax.set(title=title, ylabel=ylabel)
    if len(groups) > 1:
        ax.legend(fontsize="small")
    return _to_array(fig)


@drawing()
def scatter_image(
    x: ArrayLike, y: ArrayLike, title: str, xlabel: str = "", ylabel: str = "", logy: bool = False,
    xticks: Mapping[str, float] | None = None,
) -> np.ndarray:
    """Points (x_i, y_i) as an (H, W, 3) uint8 image (e.g. each neuron's orientation against its amplitude).

    Example:
        >>> scatter_image([0.0, 1.0], [1.0, 2.0], "neurons", logy=True).shape[2]
        3
    """
    fig = _figure()
    ax = fig.add_subplot()
    ax.scatter(np.asarray(x, dtype=float), np.asarray(y, dtype=float), s=12, alpha=0.7)
    if logy:
        ax.set_yscale("log")
    if xticks:
        ax.set_xticks(list(xticks.values()), list(xticks))
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    ax.grid(alpha=0.3)
    return _to_array(fig)


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A markdown table (TensorBoard's text plugin renders it).

    Example:
        >>> print(markdown_table(["step", "regime"], [[0, "EF"], [10, "MF"]]))
        | step | regime |
        |---|---|
        | 0 | EF |
        | 10 | MF |
    """
    lines = ["| " + " | ".join(map(str, headers)) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace("|", "\\|")


def merge_layouts(sections: Iterable[Mapping[str, Mapping[str, list]]]) -> dict[str, dict[str, list]]:
    """Merge custom-scalars layouts ``{category: {chart: ["Multiline", [tag regexes]]}}``; charts keep their order
    and a chart named twice keeps its first definition.

    Example:
        >>> merge_layouts([{"probes/a": {"x": ["Multiline", ["a/x"]]}}, {"probes/a": {"y": ["Multiline", ["a/y"]]}}])
        {'probes/a': {'x': ['Multiline', ['a/x']], 'y': ['Multiline', ['a/y']]}}
    """
    merged: dict[str, dict[str, list]] = {}
    for section in sections:
        for category, charts in section.items():
            target = merged.setdefault(category, {})
            for title, chart in charts.items():
                target.setdefault(title, chart)
    return merged


def write_layout_once(writer: Any, layout: Mapping[str, Mapping[str, list]]) -> bool:
    """Write the custom-scalars layout to a ``SummaryWriter`` unless it already has one; True if written."""
    if writer in _LAYOUT_WRITTEN or not layout:
        return False
    writer.add_custom_scalars(dict(layout))
    _LAYOUT_WRITTEN.add(writer)
    return True
