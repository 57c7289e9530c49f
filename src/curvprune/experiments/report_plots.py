"""Figures of a sweep report, drawn to be read in a paper.

Conventions shared by every figure of one report:

- One fixed colour per criterion (`CRITERION_COLOURS`), so HTS is the same pink everywhere;
  the other settings of a criterion (temperature, BatchNorm warm-up, regime, ...) get their
  own line style and marker, in first-seen order within the criterion.
- Settings that give the same masks are drawn once (`same_mask_settings`).
- The title names the model, dataset, regime, epochs and number of seeds; error bars are ±1
  standard deviation over seeds; dashed lines mark the dense accuracy (runs at sparsity 0, or
  the pretrained model's ``dense_accuracy``) and chance (1 / number of classes).
- Sparsity is shown as remaining weights (%) on a log axis, harder pruning to the right.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path

from curvprune.experiments.report import (
    _DENSITY_FLOOR,
    _float,
    _group,
    _mean_std,
    _setting_name,
    _structured,
    _target,
)
from curvprune.experiments.sweep import DENSITY_PREFIX

__all__ = [
    "CRITERION_COLOURS",
    "criterion_colour",
    "plot_accuracy",
    "plot_accuracy_vs_macs",
    "plot_layer_density",
    "same_mask_settings",
]

#: Fixed colour of each criterion: baselines in grey and black, the others from Tableau's
#: colour-blind-aware palette, then darker tones for the structured-only criteria.
CRITERION_COLOURS: dict[str, str] = {
    "random": "#8c8c8c",
    "magnitude": "#000000",
    "snip": "#1f77b4",
    "grasp": "#ff7f0e",
    "synflow": "#2ca02c",
    "fisher": "#d62728",
    "fts": "#9467bd",
    "hp": "#8c564b",
    "hts": "#e377c2",
    "oba": "#bcbd22",
    "woodfisher": "#17becf",
    "taylor": "#393b79",
    "l1": "#8c6d31",
    "gradnorm": "#637939",
    "fisher_diag": "#843c39",
    "fbss": "#7b4173",
    "oba_full": "#6b6ecf",
    "woodtaylor": "#3182bd",
}
_OTHER_COLOURS = ("#e6550d", "#31a354", "#756bb1", "#636363", "#fd8d3c", "#9ecae1")
#: (line style, marker) of a criterion's first, second, ... setting.
_VARIANTS = (
    ("-", "o"),
    ("--", "s"),
    (":", "^"),
    ("-.", "D"),
    ((0, (5, 1, 1, 1, 1, 1)), "v"),
    ((0, (1, 3)), "P"),
    ((0, (8, 2)), "X"),
    ((0, (3, 1, 3, 3)), "*"),
)
#: Columns a criterion's masks cannot depend on when it reads the weights alone.
_MASK_FREE_COLUMNS = ("bn_warmup",)
_REGIME_TEXT = {
    "init": "pruned at initialization",
    "early": "pruned early in training",
    "trained": "pruned after training",
    "gradual": "pruned gradually",
}


def criterion_colour(name: str) -> str:
    """The fixed colour of a criterion; unknown names get a stable colour from their hash."""
    if name in CRITERION_COLOURS:
        return CRITERION_COLOURS[name]
    return _OTHER_COLOURS[zlib.crc32(name.encode()) % len(_OTHER_COLOURS)]


class _Styles:
    """Colour, line style and marker of each setting, fixed for all figures of one report."""

    def __init__(self, rows: Sequence[Mapping[str, str]]) -> None:
        self.columns, groups = _group(rows)
        self.style: dict[tuple, tuple] = {}
        seen: dict[str, int] = {}
        for key, by_t in groups.items():
            criterion = next(iter(by_t.values()))[0].get("criterion") or key[0].split("[")[0]
            index = seen.get(criterion, 0)
            seen[criterion] = index + 1
            line, marker = _VARIANTS[index % len(_VARIANTS)]
            self.style[key] = (criterion_colour(criterion), line, marker)

    def key(self, row: Mapping[str, str]) -> tuple:
        return tuple(row.get(c, "") for c in self.columns)

    def of(self, row: Mapping[str, str]) -> dict:
        colour, line, marker = self.style[self.key(row)]
        return {"color": colour, "linestyle": line, "marker": marker}

    def name(self, row: Mapping[str, str]) -> str:
        return _setting_name(self.columns, self.key(row))


def _criterion_is_weight_only(name: str) -> bool:
    """Random and magnitude scores read the weights alone (not BatchNorm statistics)."""
    return name in ("random", "magnitude")


def same_mask_settings(rows: Sequence[Mapping[str, str]]) -> dict[tuple, list[tuple]]:
    """Settings whose runs have the same masks, as ``{drawn key: [keys it stands for]}``.

    Two settings are merged when they differ only in `_MASK_FREE_COLUMNS` (BatchNorm
    warm-up), their criterion reads the weights alone (random, magnitude), and every run
    (target × seed) of one has a run in the other with the same layer densities. SynFlow,
    though data-free, reads BatchNorm statistics, so warm-up changes its masks: not merged.
    Keys are those of ``report._group(rows)``; the first setting seen is the one drawn.
    """
    columns, groups = _group(rows)
    free = [i for i, c in enumerate(columns) if c in _MASK_FREE_COLUMNS]
    layers = [c for c in (rows[0] if rows else {}) if c.startswith(DENSITY_PREFIX)]

    def fingerprint(by_t: Mapping) -> dict:
        return {
            (t, r.get("seed")): tuple(_float(r.get(c)) for c in layers)
            for t, runs in by_t.items()
            for r in runs
        }

    merged: dict[tuple, list[tuple]] = {}
    for key, by_t in groups.items():
        criterion = next(iter(by_t.values()))[0].get("criterion", "")
        home = None
        if free and _criterion_is_weight_only(criterion):
            for drawn in merged:
                same_rest = all(a == b for i, (a, b) in enumerate(zip(drawn, key)) if i not in free)
                if same_rest and fingerprint(groups[drawn]) == fingerprint(by_t):
                    home = drawn
                    break
        if home is None:
            merged[key] = [key]
        else:
            merged[home].append(key)
    return {key: merged[key] for key in _by_criterion(groups, merged)}


def _by_criterion(groups: Mapping[tuple, Mapping], keys) -> list[tuple]:
    """`keys` ordered by criterion, then by first appearance within a criterion.

    Criteria come in the order of `CRITERION_COLOURS`, then by name, so that a criterion's
    settings sit together.
    """
    rank = {name: i for i, name in enumerate(CRITERION_COLOURS)}
    order = {key: i for i, key in enumerate(keys)}

    def sort_key(key: tuple) -> tuple:
        criterion = next(iter(groups[key].values()))[0].get("criterion", "")
        return (rank.get(criterion, len(rank)), criterion, order[key])

    return sorted(keys, key=sort_key)


def _merged_name(columns: Sequence[str], keys: Sequence[tuple]) -> str:
    name = _setting_name(columns, keys[0])
    if len(keys) == 1:
        return name
    varying = [c for i, c in enumerate(columns) if len({k[i] for k in keys}) > 1]  # e.g. bn_warmup
    for c in varying:
        i = columns.index(c)
        name = name.replace(f" {c}={keys[0][i]}", "")
    return f"{name} ({', '.join(varying)}: any, same masks)"


def _distinct(rows: Sequence[Mapping[str, str]], column: str) -> list[str]:
    return list(dict.fromkeys(r.get(column, "") for r in rows if r.get(column, "") != ""))


def describe(rows: Sequence[Mapping[str, str]]) -> str:
    """Model, dataset, regime, epochs and seeds of the runs, for a figure title."""
    model = "/".join(_distinct(rows, "model")) or "?"
    dataset = "/".join(_distinct(rows, "dataset")) or "?"
    regimes = _distinct(rows, "at")
    regime = ", ".join(_REGIME_TEXT.get(a, f"at {a}") for a in regimes) or "?"
    if regimes == ["early"]:
        after = _distinct(rows, "prune_after")
        if after:
            regime = f"pruned after {'/'.join(f'{_float(a):g}' for a in after)} epochs"
    epoch_values = [_float(e) for e in _distinct(rows, "epochs")]
    epochs = "/".join(f"{e:g}" for e in epoch_values) or "?"
    epochs += " epoch" if epoch_values == [1] else " epochs"
    seeds = len(_distinct(rows, "seed"))
    return (
        f"{model} on {dataset}, {regime}, {epochs} after pruning, "
        f"{seeds} seed{'s' if seeds != 1 else ''}"
    )


def _num_classes(rows: Sequence[Mapping[str, str]]) -> int | None:
    from curvprune.data.registry import DATASETS

    names = _distinct(rows, "dataset")
    counts = {DATASETS[n].num_classes for n in names if n in DATASETS}
    return counts.pop() if len(counts) == 1 else None


def _spread_note(rows: Sequence[Mapping[str, str]]) -> str:
    seeds = len(_distinct(rows, "seed"))
    if seeds > 1:
        return f"mean ± 1 std over {seeds} seeds"
    return "one seed (no error bars)"


def _reference_lines(ax, rows, metric: str, dense: Sequence[Mapping[str, str]]) -> bool:
    """Dashed lines: dense accuracy (sparsity-0 runs, else ``dense_accuracy``) and chance.

    Returns whether a dense accuracy was known.
    """
    mean = _mean_std([_float(r.get(metric)) for r in dense])[0] if dense else math.nan
    what = "dense (sparsity 0)"
    if math.isnan(mean):
        mean = _mean_std([_float(r.get("dense_accuracy")) for r in rows])[0]
        what = "dense (before pruning)"
    known = not math.isnan(mean)
    if known:
        ax.axhline(100 * mean, color="#444444", linestyle="--", linewidth=1, label=what)
    classes = _num_classes(rows)
    if classes:
        ax.axhline(
            100 / classes,
            color="#aaaaaa",
            linestyle=(0, (2, 2)),
            linewidth=1,
            label=f"chance (1/{classes})",
        )
    return known


def _log_remaining_axis(
    ax, remaining: Sequence[float], label: str, ticks: Sequence[float] | None = None
) -> None:
    """Log x axis of what remains (%), harder pruning to the right.

    Ticks at `ticks` (default: the values in `remaining`, which suits targets shared by all
    settings; pass round numbers when each setting lands elsewhere).
    """
    from matplotlib.ticker import FixedLocator, NullLocator

    ax.set_xscale("log")
    shown = sorted(set(remaining if ticks is None else ticks))
    ax.xaxis.set_major_locator(FixedLocator(shown))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticklabels([f"{t:.3g}" for t in shown])
    ticks = sorted(set(remaining)) or shown
    if ticks:
        ax.set_xlim(max(ticks) * 1.25, min(ticks) / 1.25)  # inverted: less kept to the right
    ax.set_xlabel(label)


def _panels(rows: Sequence[Mapping[str, str]]) -> list[tuple[str, str]]:
    """(metric column, panel title): before and after training on, or one if they agree."""
    epochs = [_float(e) for e in _distinct(rows, "epochs")]
    after = f"after {'/'.join(f'{e:g}' for e in epochs)} epoch{'' if epochs == [1] else 's'}"
    before = [_float(r.get("accuracy_at_prune")) for r in rows]
    final = [_float(r.get("test_accuracy")) for r in rows]
    same = all(a == b or (math.isnan(a) and math.isnan(b)) for a, b in zip(before, final))
    # At initialization the accuracy right after pruning is an untrained network's (chance).
    at_init = _distinct(rows, "at") == ["init"]
    if same or at_init or all(math.isnan(a) for a in before):
        return [("test_accuracy", f"test accuracy {after} of training")]
    return [
        ("accuracy_at_prune", "right after pruning (before training on)"),
        ("test_accuracy", f"test accuracy {after} of training"),
    ]


def _finish(fig, axes, rows, path: Path, title: str, dense_known: bool = True) -> None:
    handles, labels = axes[-1].get_legend_handles_labels()
    note = f"error bars: {_spread_note(rows)}"
    if not dense_known:
        note += "\nno dense accuracy: add sparsity 0\nto the sweep for a dense line"
    fig.suptitle(title, fontsize=10)
    fig.legend(
        handles,
        labels,
        fontsize=7,
        loc="upper left",
        bbox_to_anchor=(1.0, 0.93),
        title=note,
        alignment="left",
        title_fontsize=7,
        frameon=False,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)


def plot_accuracy(rows: Sequence[Mapping[str, str]], path: Path, styles_rows=None) -> None:
    """Accuracy against remaining weights (unstructured runs): before and after training on.

    Args:
        rows: unstructured rows of ``results.csv``.
        path: the PNG to write.
        styles_rows: every row of the report, so that styles match the other figures
            (default: `rows`).
    """
    import matplotlib.pyplot as plt

    styles = _Styles(styles_rows or rows)
    dense = [r for r in rows if _float(r.get("sparsity")) == 0]
    pruned = [r for r in rows if _float(r.get("sparsity")) != 0] or rows
    columns, groups = _group(pruned)
    drawn = same_mask_settings(pruned)
    panels = _panels(pruned)
    fig, axes = plt.subplots(
        1, len(panels), figsize=(5.2 * len(panels), 4.2), squeeze=False, sharey=False
    )
    axes = list(axes[0])
    remaining_all = []
    for ax, (metric, panel_title) in zip(axes, panels):
        for key, keys in drawn.items():
            by_t = groups[key]
            points = []
            for t in sorted(by_t):
                mean, std = _mean_std([_float(r.get(metric)) for r in by_t[t]])
                points.append((100 * (1 - t[1]), 100 * mean, 100 * std))
            xs, means, stds = zip(*points)
            remaining_all += xs
            first = next(iter(by_t.values()))[0]
            ax.errorbar(
                xs,
                means,
                yerr=stds,
                capsize=2,
                markersize=4,
                linewidth=1.2,
                label=_merged_name(columns, keys),
                **styles.of(first),
            )
        dense_known = _reference_lines(ax, pruned, metric, dense)
        _log_remaining_axis(ax, remaining_all, "remaining weights (% of prunable, log scale)")
        ax.set_title(panel_title, fontsize=9)
        ax.set_ylabel("test top-1 accuracy (%)")
        ax.grid(alpha=0.3)
    _finish(fig, axes, pruned, path, describe(rows), dense_known)


def plot_accuracy_vs_macs(rows: Sequence[Mapping[str, str]], path: Path, styles_rows=None) -> None:
    """Accuracy against the kept fraction of MACs (structured runs), log scale."""
    import matplotlib.pyplot as plt

    styles = _Styles(styles_rows or rows)
    columns, groups = _group(rows)
    panels = _panels(rows)
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.2), squeeze=False)
    axes = list(axes[0])
    kept_all = []
    for ax, (metric, panel_title) in zip(axes, panels):
        for key in _by_criterion(groups, groups):
            by_t = groups[key]
            points = []
            for runs in by_t.values():
                mean, std = _mean_std([_float(r.get(metric)) for r in runs])
                kept, _ = _mean_std([_float(r.get("macs_kept")) for r in runs])
                points.append((100 * kept, 100 * mean, 100 * std))
            points.sort(reverse=True)
            xs, means, stds = zip(*points)
            kept_all += xs
            first = next(iter(by_t.values()))[0]
            ax.errorbar(xs, means, yerr=stds, capsize=2, markersize=4, linewidth=1.2,
                        label=_setting_name(columns, key), **styles.of(first))  # fmt: skip
        dense_known = _reference_lines(ax, rows, metric, [])
        # Each setting lands at its own MACs: ticks at round numbers within the range.
        low, high = min(kept_all), max(kept_all)
        nice = [v for v in (1, 2, 5, 10, 20, 30, 50, 70, 100) if low / 1.3 <= v <= high * 1.3]
        _log_remaining_axis(ax, kept_all, "MACs kept (% of dense, log scale)", nice)
        ax.set_title(panel_title, fontsize=9)
        ax.set_ylabel("test top-1 accuracy (%)")
        ax.grid(alpha=0.3)
    _finish(fig, axes, rows, path, describe(rows) + ", structured", dense_known)


def plot_layer_density(rows: Sequence[Mapping[str, str]], path: Path) -> None:
    """Heat-map of the kept fraction per tensor (columns) and setting (rows).

    One panel per sparsity (the four hardest); collapsed tensors (nothing kept) are marked ×.
    """
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.colors import LogNorm

    pruned = [r for r in rows if _float(r.get("sparsity")) != 0] or rows
    columns, groups = _group(pruned)
    drawn = same_mask_settings(pruned)
    layers = list(dict.fromkeys(c for r in pruned for c in r if c.startswith(DENSITY_PREFIX)))
    targets = sorted({_target(r) for r in pruned})[-4:]
    names = [_merged_name(columns, keys) for keys in drawn.values()]
    width = max(3.0, 0.45 * len(layers) + 1.0)
    height = max(2.5, 0.28 * len(names) + 1.6)
    fig, axes = plt.subplots(
        1,
        len(targets),
        figsize=(width * len(targets) + 2.5, height),
        squeeze=False,
        sharey=True,
        layout="constrained",
    )
    cmap = plt.get_cmap("viridis").with_extremes(bad="white")
    norm = LogNorm(vmin=_DENSITY_FLOOR * 10, vmax=1.0)
    image = None
    for ax, t in zip(axes[0], targets):
        grid = np.full((len(names), len(layers)), np.nan)
        for i, key in enumerate(drawn):
            runs = groups[key].get(t, [])
            for j, c in enumerate(layers):
                if runs:
                    grid[i, j] = _mean_std([_float(r.get(c)) for r in runs])[0]
        shown = np.ma.masked_where(~(grid > 0), np.clip(grid, _DENSITY_FLOOR * 10, 1.0))
        image = ax.imshow(shown, cmap=cmap, norm=norm, aspect="auto", interpolation="nearest")
        for i, j in zip(*np.nonzero(grid == 0)):
            ax.text(j, i, "×", ha="center", va="center", color="#d62728", fontsize=11)
        if grid.size <= 160:
            for (i, j), v in np.ndenumerate(grid):
                if v > 0:
                    light = norm(max(v, _DENSITY_FLOOR * 10)) < 0.6
                    ax.text(j, i, f"{100 * v:.2g}", ha="center", va="center", fontsize=6,
                            color="white" if light else "black")  # fmt: skip
        ax.set_title(f"sparsity {t[1]:g} ({100 * (1 - t[1]):.3g}% kept overall)", fontsize=9)
        ax.set_xticks(range(len(layers)))
        ax.set_xticklabels(
            [c[len(DENSITY_PREFIX) :] for c in layers], rotation=60, ha="right", fontsize=7
        )
        ax.set_yticks(range(len(names)))
        ax.set_yticklabels(names, fontsize=7)
    colourbar = fig.colorbar(image, ax=list(axes[0]), fraction=0.03, pad=0.01)
    colourbar.set_label("kept fraction of the tensor (log; numbers: % kept)", fontsize=8)
    fig.suptitle(
        f"{describe(pruned)}\nLayer density after pruning (mean over seeds); "
        "× = collapsed (no weight left); blank = not run",
        fontsize=9,
    )
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def is_structured(row: Mapping[str, str]) -> bool:
    return _structured(row)
