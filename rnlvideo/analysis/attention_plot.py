"""Render :class:`AttentionMaps` as a PNG grid like the paper's "Attention Map of RNL" figure.

Rows are query points, columns the clip's frames; every cell shows the frame with the query's
attention heat map overlaid (one colour scale per row, from the row's lowest to its highest
weight, so frames compare), and the query's own frame marks the query point. The row label
gives the peak weight relative to uniform attention (1x: the block attends everywhere alike).
"""

from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure

from rnlvideo.analysis.attention import AttentionMaps

CELL_INCHES = 1.6
DPI = 100
TITLE_INCHES = 0.6  # above the cells: the title and the frame indices
HEAT_ALPHA = 0.5


def attention_figure(maps: AttentionMaps, title: str | None = None) -> Figure:
    """A figure of ``Q`` rows x ``T`` columns (``CELL_INCHES`` per cell, ``DPI`` dots/inch)."""
    heat = maps.heatmaps().numpy()  # (Q, T, H, W)
    frames = maps.frames.numpy()  # (T, H, W, 3)
    num_queries, num_frames = heat.shape[:2]
    height, width = frames.shape[1:3]
    fig_height = CELL_INCHES * num_queries + TITLE_INCHES
    fig = Figure(figsize=(CELL_INCHES * num_frames, fig_height), dpi=DPI)
    axes = fig.subplots(num_queries, num_frames, squeeze=False)
    num_keys = maps.affinity[0].numel()
    for q, (t_query, y, x) in enumerate(maps.queries):
        low, high = float(heat[q].min()), float(heat[q].max())
        for t in range(num_frames):
            ax = axes[q, t]
            ax.imshow(frames[t], interpolation="nearest")
            ax.imshow(
                heat[q, t], cmap="jet", alpha=HEAT_ALPHA, vmin=low, vmax=max(high, low + 1e-12)
            )
            ax.set_xticks([])
            ax.set_yticks([])
            if q == 0:
                ax.set_title(f"t={t}", fontsize=8)
            if t == t_query:
                ax.plot(
                    x * (width - 1),
                    y * (height - 1),
                    marker="o",
                    markersize=7,
                    markerfacecolor="none",
                    markeredgecolor="white",
                    markeredgewidth=2,
                )
        peak = float(maps.affinity[q].max()) * num_keys
        axes[q, 0].set_ylabel(
            f"query ({t_query}, {y:.2f}, {x:.2f})\npeak {peak:.1f}x uniform", fontsize=7
        )
    fig.suptitle(title or f"{maps.kind} attention, {maps.block}", fontsize=10, parse_math=False)
    fig.subplots_adjust(
        left=0.06,
        right=0.99,
        bottom=0.02,
        top=1 - TITLE_INCHES / fig_height,
        wspace=0.04,
        hspace=0.06,
    )
    return fig


def save_attention_png(maps: AttentionMaps, path: str | Path, title: str | None = None) -> Path:
    """Write the grid of :func:`attention_figure` as a PNG; returns its path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    attention_figure(maps, title).savefig(path)
    return path
