"""Reports: fixed colours per criterion, merged same-mask settings, panels, titles, the
log axis of remaining weights, the layer-density heat-map, and LaTeX / CSV tables."""

from __future__ import annotations

import csv
import io

import matplotlib
import pytest

from curvprune.errors import InvalidArgument
from curvprune.experiments.report import build_report
from curvprune.experiments.report_plots import (
    CRITERION_COLOURS,
    _log_remaining_axis,
    _panels,
    _Styles,
    criterion_colour,
    describe,
    same_mask_settings,
)
from curvprune.experiments.report_tables import aggregate, csv_table, latex_table
from curvprune.experiments.sweep import _write_results

matplotlib.use("Agg")


def row(criterion, sparsity, seed, acc, *, label=None, at="init", bn_warmup=False,
        density=(0.5, 0.25), at_prune=0.1, epochs=10):  # fmt: skip
    """One results.csv row as strings, as `read_results` returns them."""
    values = {
        "run_id": f"{label or criterion}-{sparsity}-{seed}-{bn_warmup}",
        "label": label or criterion,
        "model": "lenet5_bn",
        "dataset": "fashion-mnist",
        "criterion": criterion,
        "at": at,
        "bn_warmup": bn_warmup,
        "sparsity": sparsity,
        "actual_sparsity": sparsity,
        "structured": False,
        "seed": seed,
        "epochs": epochs,
        "test_accuracy": acc,
        "accuracy_at_prune": at_prune,
        "num_collapsed": 0,
        "score_s": 0.5,
        "train_s": 1.0,
        "density:conv.weight": density[0],
        "density:fc.weight": density[1],
    }
    return {k: str(v) for k, v in values.items()}


def grid(criteria, warmups=(False, True), sparsities=(0.9, 0.99), seeds=(0, 1)):
    rows = []
    for c in criteria:
        for w in warmups:
            for s in sparsities:
                for seed in seeds:
                    # Magnitude masks ignore warm-up; other criteria's densities move with it.
                    density = (1 - s, (1 - s) / 2) if c == "magnitude" else (1 - s, 0.3 + w / 10)
                    rows.append(row(c, s, seed, 0.9 - s / 2 + seed / 100, bn_warmup=w,
                                    density=density))  # fmt: skip
    return rows


def test_each_criterion_keeps_its_colour_whatever_the_other_settings():
    labels = [f"hts[temperature={t}]" for t in (1, 10, 100, 1000)]
    rows = [row("hts", 0.9, 0, 0.8, label=label) for label in labels]
    rows += [row(c, 0.9, 0, 0.8) for c in CRITERION_COLOURS if c != "hts"]
    rows += [row(c, 0.9, 0, 0.8, label=c + "[iterations=2]") for c in ("snip", "grasp")]
    styles = _Styles(rows)
    for r in rows:
        assert styles.of(r)["color"] == criterion_colour(r["criterion"])
    # 17 settings: criteria never share a colour; settings of one criterion differ in style.
    assert len(set(CRITERION_COLOURS.values())) == len(CRITERION_COLOURS)
    hts = {(styles.of(r)["linestyle"], styles.of(r)["marker"]) for r in rows[:4]}
    assert len(hts) == 4
    # The same criterion in another report (other settings, other order): same colour.
    assert _Styles(list(reversed(rows[:2]))).of(rows[0])["color"] == CRITERION_COLOURS["hts"]
    assert criterion_colour("mine") == criterion_colour("mine")  # unknown: stable


def test_settings_with_the_same_masks_are_drawn_once():
    rows = grid(["magnitude", "snip", "synflow"])
    merged = same_mask_settings(rows)
    sizes = {key[0]: len(keys) for key, keys in merged.items()}
    # magnitude: one line for both warm-ups; snip and synflow: their masks move with it.
    assert sizes == {"magnitude": 2, "snip": 1, "synflow": 1}
    assert len(merged) == 5


def test_title_names_model_dataset_regime_epochs_and_seeds():
    text = describe(grid(["snip"], seeds=(0, 1, 2)))
    assert text == (
        "lenet5_bn on fashion-mnist, pruned at initialization, 10 epochs after pruning, 3 seeds"
    )


def test_before_and_after_panels_except_at_initialization():
    trained = [row("snip", 0.9, 0, 0.8, at="trained", at_prune=0.5)]
    assert [m for m, _ in _panels(trained)] == ["accuracy_at_prune", "test_accuracy"]
    assert [m for m, _ in _panels([row("snip", 0.9, 0, 0.8)])] == ["test_accuracy"]
    same = [row("snip", 0.9, 0, 0.5, at="trained", at_prune=0.5, epochs=0)]
    assert [m for m, _ in _panels(same)] == ["test_accuracy"]


def test_remaining_weights_axis_is_logarithmic_and_inverted():
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    _log_remaining_axis(ax, [10.0, 1.0, 0.5], "remaining")
    assert ax.get_xscale() == "log"
    left, right = ax.get_xlim()
    assert left > right  # less kept to the right
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0.5", "1", "10"]
    plt.close(fig)


def test_build_report_draws_every_figure_and_writes_each_format(tmp_path):
    rows = grid(["magnitude", "hts"], sparsities=(0.0, 0.9, 0.99))
    _write_results(tmp_path, rows)
    markdown = build_report(tmp_path)
    assert markdown.startswith("# Sweep summary")
    for name in ("accuracy_vs_sparsity.png", "layer_density.png"):
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"
    latex = build_report(tmp_path, format="latex", plots=False)
    assert (tmp_path / "summary.tex").read_text() == latex
    table = build_report(tmp_path, format="csv", plots=False)
    assert (tmp_path / "summary_table.csv").read_text() == table
    with pytest.raises(InvalidArgument, match="unknown report format 'html'; valid: markdown"):
        build_report(tmp_path, format="html")


def test_latex_table_is_booktabs_with_mean_std_and_bold_best():
    rows = [row("snip", 0.9, s, 0.80 + s / 100) for s in (0, 1)]
    rows += [row("hts", 0.9, s, 0.70) for s in (0, 1)]
    rows += [row("hts", 0.99, s, 0.60) for s in (0, 1)]
    rows += [row("magnitude", 0.99, s, 0.10, label="mag_nitude") for s in (0, 1)]
    text = latex_table(rows)
    for command in (r"\toprule", r"\midrule", r"\bottomrule", r"\begin{tabular}{lcc}"):
        assert command in text
    lines = {line.split(" & ")[0]: line for line in text.splitlines() if " & " in line}
    assert lines["snip"] == r"snip & \textbf{80.50 $\pm$ 0.71} & -- \\"
    assert lines["hts"] == r"hts & 70.00 $\pm$ 0.00 & \textbf{60.00 $\pm$ 0.00} \\"
    assert r"mag\_nitude & -- & 10.00 $\pm$ 0.00 \\" in text  # escaped
    assert "over 2 seeds" in text


def test_csv_table_aggregates_over_seeds():
    rows = [row("snip", 0.9, s, 0.80 + s / 100) for s in (0, 1, 2)]
    table = list(csv.DictReader(io.StringIO(csv_table(rows))))
    assert len(table) == 1 and table[0]["label"] == "snip" and table[0]["target"] == "0.9"
    assert table[0]["n"] == "3"
    assert float(table[0]["test_accuracy_mean"]) == pytest.approx(0.81)
    assert float(table[0]["test_accuracy_std"]) == pytest.approx(0.01)
    assert aggregate([]) == [] and csv_table([]) == ""


def test_settings_of_one_criterion_are_listed_together():
    rows = grid(["hts", "snip", "magnitude"])
    order = [key[0] for key in same_mask_settings(rows)]
    assert order == ["magnitude", "snip", "snip", "hts", "hts"]


def test_every_registered_criterion_has_its_own_fixed_colour():
    from curvprune import CRITERIA
    from curvprune.experiments.report_plots import CRITERION_COLOURS

    assert set(CRITERIA) <= set(CRITERION_COLOURS)
    assert len(set(CRITERION_COLOURS.values())) == len(CRITERION_COLOURS)


def test_build_report_redraws_a_plot_only_when_results_csv_is_newer(tmp_path):
    import os

    _write_results(tmp_path, grid(["magnitude"], sparsities=(0.5, 0.9)))
    build_report(tmp_path)
    plot = tmp_path / "accuracy_vs_sparsity.png"
    csv_mtime = (tmp_path / "results.csv").stat().st_mtime_ns
    plot.write_bytes(b"up to date")
    os.utime(plot, ns=(csv_mtime + 10**9, csv_mtime + 10**9))  # drawn after the results
    build_report(tmp_path)
    assert plot.read_bytes() == b"up to date"  # not redrawn
    os.utime(plot, ns=(csv_mtime - 10**9, csv_mtime - 10**9))  # results changed since
    build_report(tmp_path)
    assert plot.read_bytes()[:4] == b"\x89PNG"
