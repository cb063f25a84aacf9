"""The logit-lens figure of a model diff: the rank of watched tokens in each layer's mean difference, one panel
per model it is read through. Its own module so ``plots.py`` stays small; `plots.diff_figures` draws it."""

from __future__ import annotations

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from rlhf_interp.core.style import cycle


def _subplots(*args, **kwargs):
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(*args, **kwargs)
    plt.close(fig)  # returned, not kept by pyplot
    return fig, axes


def plot_logit_lens_ranks(ranks: pd.DataFrame) -> Figure:
    """Rank of each watched token in each layer's mean difference, one panel per model the difference is read
    through ("via base", "via tuned"), sharing the y axis, one colour + marker per token in both panels. (Drawn
    in one panel, the "via base" lines lay exactly under the "via tuned" ones and could not be seen.)"""
    missing = [c for c in ("layer", "rank", "token", "model") if c not in ranks.columns]
    if missing:
        raise ValueError(f"DataFrame lacks column(s) {missing}; it has {list(ranks.columns)}.")
    models = list(dict.fromkeys(ranks["model"]))
    tokens = list(dict.fromkeys(ranks["token"]))
    fig, axes = _subplots(1, len(models), figsize=(5.6 * len(models), 4.2), sharey=True, squeeze=False)
    for ax, model in zip(axes[0], models):
        sub = ranks[ranks["model"] == model]
        for i, token in enumerate(tokens):
            series = sub[sub["token"] == token].groupby("layer")["rank"].mean()
            ax.plot(series.index, series.values, markersize=3.5, lw=1.4, label=repr(token),
                    color=cycle(i)["color"], marker=cycle(i)["marker"])
        ax.set_yscale("log")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("layer")
        ax.set_title(f"read through the {model} model's unembedding", fontsize=10)
        ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel("rank in the vocabulary (1 = most promoted)")
    axes[0, -1].legend(title="token", fontsize=8)
    fig.suptitle("rank of watched tokens in each layer's mean difference (1 = most promoted)", fontsize=11)
    fig.tight_layout()
    return fig


__all__ = ["plot_logit_lens_ranks"]
