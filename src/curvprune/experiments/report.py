"""Reports from a sweep's ``results.csv``: a Markdown summary and plots.

Everything here reads only ``results.csv``, so ``curvprune report DIR`` rebuilds the same
files a sweep wrote. Runs are grouped into *settings*: the criterion label plus any of
`SETTING_COLUMNS` that vary across the table; seeds are averaged within a setting. Within a
setting, runs are placed by their *target*: the sparsity, or for structured runs the channel
sparsity (``ch 0.5``) or the MACs target (``MACs 0.25``).
"""

from __future__ import annotations

import math
import os
import statistics
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path

from curvprune.errors import DataError, InvalidArgument
from curvprune.experiments.files import atomic_write_text
from curvprune.experiments.sweep import read_results

__all__ = ["REPORT_FORMATS", "SETTING_COLUMNS", "build_report", "summary_markdown"]

#: Columns that, when they vary within one sweep, split its runs into separate settings.
SETTING_COLUMNS = (
    "model", "dataset", "at", "bn_warmup", "prune_after", "scope", "structured", "epochs",
)  # fmt: skip
_DENSITY_FLOOR = 1e-4  # where a collapsed (density 0) tensor is drawn on the log axis


def _float(value: str | None) -> float:
    try:
        return float(value) if value not in (None, "") else math.nan
    except ValueError:
        return math.nan


def _diverged(row: Mapping[str, str]) -> bool:
    """A run stopped by a non-finite training loss (its accuracy is empty, not a number)."""
    return row.get("status") == "diverged"


def _accuracy_cell(runs: Sequence[Mapping[str, str]], text: str) -> str:
    """``text`` (the mean, or empty), saying how many of ``runs`` diverged."""
    diverged = sum(map(_diverged, runs))
    if not diverged:
        return text or "–"
    if not text:
        return "diverged" if diverged == len(runs) else f"diverged ({diverged}/{len(runs)})"
    return f"{text} ({diverged} diverged)"


def _setting_columns(rows: Sequence[Mapping[str, str]]) -> list[str]:
    return ["label"] + [c for c in SETTING_COLUMNS if len({r.get(c, "") for r in rows}) > 1]


def _structured(row: Mapping[str, str]) -> bool:
    return str(row.get("structured", "")).lower() in ("true", "1")


def _target(row: Mapping[str, str]) -> tuple[int, float, str]:
    """Sort key and column title of what a run pruned to; harder targets sort later."""
    if not _structured(row):
        s = _float(row["sparsity"])
        return 0, s, f"{s:g}"
    channels = _float(row.get("channel_sparsity"))
    if not math.isnan(channels):
        return 1, channels, f"ch {channels:g}"
    macs = _float(row.get("macs_target"))
    return 2, -macs, f"MACs {macs:g}"


def _group(rows: Sequence[Mapping[str, str]]) -> tuple[list[str], dict]:
    """``{setting tuple: {target: [rows]}}`` in first-seen order, and the setting columns."""
    columns = _setting_columns(rows)
    groups: dict[tuple, dict[tuple, list]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        key = tuple(row.get(c, "") for c in columns)
        groups[key][_target(row)].append(row)
    return columns, groups


def _targets(rows: Sequence[Mapping[str, str]]) -> list[tuple[int, float, str]]:
    return sorted({_target(r) for r in rows})


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return math.nan, math.nan
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def _setting_name(columns: Sequence[str], key: Sequence[str]) -> str:
    parts = [key[0]] + [f"{c}={v}" for c, v in zip(columns[1:], key[1:], strict=True) if v]
    return " ".join(parts)


def summary_markdown(rows: Sequence[Mapping[str, str]]) -> str:
    """Markdown tables of a sweep's rows.

    Test accuracy mean ± std (%) per setting × target, best in bold; for structured runs what
    they kept (MACs, parameters) and their speed-up; then layer collapse and scoring time per
    setting.
    """
    from curvprune.experiments.report_plots import describe  # it imports this module

    if not rows:
        return "# Sweep summary\n\nNo finished runs yet.\n"
    columns, groups = _group(rows)
    targets = _targets(rows)
    stats = {
        key: {t: _mean_std([_float(r["test_accuracy"]) for r in by_t.get(t, [])]) for t in targets}
        for key, by_t in groups.items()
    }
    best = {
        t: max((m for m, _ in (stats[k][t] for k in stats) if not math.isnan(m)), default=math.nan)
        for t in targets
    }
    seeds = sorted({r.get("seed", "") for r in rows}, key=lambda v: _float(v))
    header = "| " + " | ".join(columns) + " | " + " | ".join(t[2] for t in targets) + " |"
    rule = "|" + "---|" * (len(columns) + len(targets))
    lines = [
        "# Sweep summary",
        "",
        f"{describe(rows)}; {len(rows)} runs; seeds {', '.join(seeds)}. "
        "Test top-1 accuracy (%) after the final epochs"
        + (", mean ± std over seeds" if len(seeds) > 1 else " (one seed: no spread to show)")
        + (
            "; **bold**: best in its column; ch: channel sparsity, MACs: kept fraction of MACs "
            "targeted."
            if targets[-1][0] > 0
            else "; **bold**: best at that sparsity."
        ),
        "",
        header,
        rule,
    ]
    for key in groups:
        cells = []
        for t in targets:
            mean, std = stats[key][t]
            runs = groups[key].get(t, [])
            if math.isnan(mean):
                cells.append(_accuracy_cell(runs, ""))
                continue
            n = sum(not _diverged(r) for r in runs)
            text = f"{100 * mean:.2f}" + (f" ± {100 * std:.2f}" if len(seeds) > 1 else "")
            text += f" (n={n})" if n != len(seeds) else ""
            cells.append(_accuracy_cell(runs, f"**{text}**" if mean >= best[t] - 1e-12 else text))
        lines.append("| " + " | ".join(key) + " | " + " | ".join(cells) + " |")

    structured = [t for t in targets if t[0] > 0]
    if structured:
        lines += [
            "",
            "Structured runs: MACs kept (%), parameters kept (%), CPU speed-up at batch 1 / 64 "
            "(means over seeds).",
            "",
            "| " + " | ".join(columns) + " | " + " | ".join(t[2] for t in structured) + " |",
            "|" + "---|" * (len(columns) + len(structured)),
        ]
        for key, by_t in groups.items():
            cells = []
            for t in structured:
                runs = by_t.get(t, [])
                if not runs:
                    cells.append("–")
                    continue
                macs, params, fast1, fast64 = (
                    _mean_std([_float(r.get(c)) for r in runs])[0]
                    for c in ("macs_kept", "params_kept", "speedup:1", "speedup:64")
                )
                cells.append(
                    f"{100 * macs:.1f} · {100 * params:.1f} · {fast1:.2f}× / {fast64:.2f}×"
                )
            lines.append("| " + " | ".join(key) + " | " + " | ".join(cells) + " |")

    lines += [
        "",
        "Layer collapse: runs with at least one prunable tensor fully pruned / runs "
        "(n/a: results.csv does not say).",
        "",
        header,
        rule,
    ]
    for key, by_t in groups.items():
        cells = []
        for t in targets:
            runs = [r for r in by_t.get(t, []) if not _diverged(r)]
            known = [_float(r.get("num_collapsed")) for r in runs]
            known = [k for k in known if not math.isnan(k)]
            collapsed = sum(k > 0 for k in known)
            unknown = f" ({len(runs) - len(known)} n/a)" if 0 < len(known) < len(runs) else ""
            cells.append(
                "–" if not runs else "n/a" if not known else f"{collapsed}/{len(known)}{unknown}"
            )
        lines.append("| " + " | ".join(key) + " | " + " | ".join(cells) + " |")

    lines += [
        "",
        "Mean time per run (s): scoring and training.",
        "",
        "| " + " | ".join(columns) + " | score_s | train_s |",
        "|" + "---|" * (len(columns) + 2),
    ]
    for key, by_t in groups.items():
        runs = [r for rs in by_t.values() for r in rs]
        score, _ = _mean_std([_float(r.get("score_s")) for r in runs])
        train, _ = _mean_std([_float(r.get("train_s")) for r in runs])
        lines.append("| " + " | ".join(key) + f" | {score:.2f} | {train:.2f} |")
    diverged = [r for r in rows if _diverged(r)]
    if diverged:
        lines += ["", "Diverged runs (non-finite training loss; no accuracy):", ""]
        lines += [f"- {r['run_id']}: {r.get('error', '')}" for r in diverged]
    return "\n".join(lines) + "\n"


#: Formats of `build_report`'s returned table, and the file each one is written to.
REPORT_FORMATS = {"markdown": "summary.md", "latex": "summary.tex", "csv": "summary_table.csv"}


def build_report(
    out_dir: str | os.PathLike, format: str = "markdown", *, plots: bool = True
) -> str:
    """Write the summary, the table in `format` and the plots from ``out_dir/results.csv``.

    Returns the table text in `format`.

    Formats: ``markdown`` (``summary.md``: accuracy, structured costs, layer collapse and
    timings), ``latex`` (``summary.tex``: a booktabs table of test accuracy, mean ± std,
    best per column in bold) and ``csv`` (``summary_table.csv``: one row per setting ×
    target with means and standard deviations over seeds; see
    `curvprune.experiments.report_tables.aggregate`). ``summary.md`` is always written.

    Plots (unless ``plots=False``; see `curvprune.experiments.report_plots`):
    ``accuracy_vs_sparsity.png`` and ``layer_density.png`` from unstructured runs,
    ``accuracy_vs_macs.png`` from the runs with a ``macs_kept`` column (structured runs).

    Raises:
        InvalidArgument: An unknown `format`.
        DataError: If ``out_dir/results.csv`` does not exist or lacks the needed columns.
    """
    if format not in REPORT_FORMATS:
        raise InvalidArgument(
            f"unknown report format {format!r}; valid: {', '.join(REPORT_FORMATS)}"
        )
    from curvprune.experiments import report_tables

    out_dir = Path(out_dir)
    csv_path = out_dir / "results.csv"
    if not csv_path.is_file():
        raise DataError(f"no results.csv in {out_dir}: run `curvprune sweep --out {out_dir}` first")
    rows = read_results(out_dir)
    _check_columns(rows, csv_path)
    summary = summary_markdown(rows)
    atomic_write_text(out_dir / "summary.md", summary)
    text = {
        "markdown": lambda: summary,
        "latex": lambda: report_tables.latex_table(rows),
        "csv": lambda: report_tables.csv_table(rows),
    }[format]()
    if format != "markdown":
        atomic_write_text(out_dir / REPORT_FORMATS[format], text)
    if not plots:
        return text
    rows = [r for r in rows if not _diverged(r)]  # no accuracy to draw
    unstructured = [r for r in rows if not _structured(r)]
    with_macs = [r for r in rows if not math.isnan(_float(r.get("macs_kept")))]
    # A plot newer than results.csv is up to date (a sweep whose runs had all finished).
    wanted = {
        "accuracy_vs_sparsity.png": bool(unstructured),
        "layer_density.png": bool(unstructured),
        "accuracy_vs_macs.png": bool(with_macs),
    }
    plots_to_draw = [n for n, w in wanted.items() if w and _stale(out_dir / n, source=csv_path)]
    if plots_to_draw:
        import matplotlib

        from curvprune.experiments import report_plots

        matplotlib.use("Agg")
        draw = {
            "accuracy_vs_sparsity.png": lambda p: report_plots.plot_accuracy(unstructured, p, rows),
            "layer_density.png": lambda p: report_plots.plot_layer_density(unstructured, p),
            "accuracy_vs_macs.png": lambda p: report_plots.plot_accuracy_vs_macs(
                with_macs, p, rows
            ),
        }
        for name in plots_to_draw:
            draw[name](out_dir / name)
    return text


def _stale(plot: Path, *, source: Path) -> bool:
    """Whether `plot` must be drawn: missing, or older than the `source` it is drawn from."""
    return not plot.is_file() or plot.stat().st_mtime_ns < source.stat().st_mtime_ns


#: Columns every table needs: without ``seed``, runs of different seeds would be merged.
_NEEDED_COLUMNS = ("label", "sparsity", "test_accuracy", "seed")


def _check_columns(rows: Sequence[Mapping[str, str]], csv_path: Path) -> None:
    """Refuse a table that lacks what every table uses, rather than filling it in."""
    if not rows:
        return
    missing = [c for c in _NEEDED_COLUMNS if c not in rows[0]]
    if missing:
        raise DataError(f"{csv_path} lacks the column(s) {', '.join(missing)}")
    unseeded = sum(r.get("seed", "") == "" for r in rows)
    if unseeded:
        raise DataError(
            f"{csv_path}: {unseeded} row(s) have no seed, so their seeds cannot be told apart"
        )
