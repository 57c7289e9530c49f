"""Tables of a sweep report in other formats: a booktabs LaTeX table and an aggregated CSV.

Both aggregate the same way as the Markdown summary
(`curvprune.experiments.report.summary_markdown`): runs are grouped into settings
(criterion label plus the setting columns that vary), and seeds are averaged within a
setting and target.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping, Sequence

from curvprune.experiments.report import _float, _group, _mean_std, _setting_name, _targets

__all__ = ["AGGREGATED_METRICS", "aggregate", "csv_table", "latex_table"]

#: Columns of results.csv averaged over seeds in the aggregated table (when present).
AGGREGATED_METRICS = (
    "test_accuracy",
    "accuracy_at_prune",
    "actual_sparsity",
    "num_collapsed",
    "macs:effective",
    "macs_kept",
    "params_kept",
    "score_s",
    "train_s",
)


def aggregate(rows: Sequence[Mapping[str, str]]) -> list[dict[str, object]]:
    """One dict per setting × target.

    Each holds the setting columns, ``target``, ``n`` (runs), and ``<metric>_mean`` /
    ``<metric>_std`` (sample std over seeds, 0 for one run) of each of `AGGREGATED_METRICS`
    that the table has.
    """
    if not rows:
        return []
    columns, groups = _group(rows)
    metrics = [m for m in AGGREGATED_METRICS if any(r.get(m, "") != "" for r in rows)]
    out = []
    for key, by_t in groups.items():
        for t in sorted(by_t):
            runs = by_t[t]
            entry: dict[str, object] = dict(zip(columns, key))
            entry["target"] = t[2]
            entry["n"] = len(runs)
            for m in metrics:
                mean, std = _mean_std([_float(r.get(m)) for r in runs])
                entry[f"{m}_mean"] = mean
                entry[f"{m}_std"] = std
            out.append(entry)
    return out


def csv_table(rows: Sequence[Mapping[str, str]]) -> str:
    """`aggregate` as CSV text (empty cells for metrics a setting lacks)."""
    table = aggregate(rows)
    if not table:
        return ""
    fields = list(dict.fromkeys(k for entry in table for k in entry))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields, restval="", lineterminator="\n")
    writer.writeheader()
    for entry in table:
        writer.writerow(
            {k: "" if isinstance(v, float) and math.isnan(v) else v for k, v in entry.items()}
        )
    return buffer.getvalue()


_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}


def latex_escape(text: str) -> str:
    """`text` with LaTeX's special characters escaped."""
    return "".join(_LATEX_SPECIAL.get(c, c) for c in str(text))


def latex_table(rows: Sequence[Mapping[str, str]], metric: str = "test_accuracy") -> str:
    r"""A booktabs ``table``: `metric` (%) mean ± std over seeds per setting × target.

    The best mean of each column is bold. Needs ``\usepackage{booktabs}`` in the preamble.
    """
    if not rows:
        return "% no finished runs yet\n"
    columns, groups = _group(rows)
    targets = _targets(rows)
    seeds = {r.get("seed", "") for r in rows}
    stats = {
        key: {t: _mean_std([_float(r.get(metric)) for r in by_t.get(t, [])]) for t in targets}
        for key, by_t in groups.items()
    }
    best = {
        t: max((s[t][0] for s in stats.values() if not math.isnan(s[t][0])), default=math.nan)
        for t in targets
    }
    first = rows[0]
    spread = f" (mean $\\pm$ std over {len(seeds)} seeds)" if len(seeds) > 1 else ""
    what = "test top-1 accuracy" if metric == "test_accuracy" else metric.replace("_", " ")
    caption = (
        f"{latex_escape(first.get('model', '?'))} on {latex_escape(first.get('dataset', '?'))}: "
        f"{latex_escape(what)} (\\%){spread} per criterion and "
        + ("target" if targets[-1][0] > 0 else "sparsity")
        + "; best per column in bold."
    )
    header = r"Criterion & " + " & ".join(latex_escape(t[2]) for t in targets) + r" \\"
    axis = "sparsity (fraction of weights removed)" if targets[-1][0] == 0 else "target"
    lines = [
        r"% \usepackage{booktabs} in the preamble",
        r"\begin{table}[t]",
        r"\centering",
        r"\caption{" + caption + "}",
        r"\label{tab:curvprune-sweep}",
        r"\begin{tabular}{l" + "c" * len(targets) + "}",
        r"\toprule",
        rf" & \multicolumn{{{len(targets)}}}{{c}}{{{axis}}} \\",
        rf"\cmidrule(lr){{2-{len(targets) + 1}}}",
        header,
        r"\midrule",
    ]
    for key in groups:
        cells = []
        for t in targets:
            mean, std = stats[key][t]
            if math.isnan(mean):
                runs = groups[key].get(t, [])
                diverged = runs and all(r.get("status") == "diverged" for r in runs)
                cells.append("diverged" if diverged else "--")
                continue
            text = f"{100 * mean:.2f}" + (f" $\\pm$ {100 * std:.2f}" if len(seeds) > 1 else "")
            cells.append(r"\textbf{" + text + "}" if mean >= best[t] - 1e-12 else text)
        name = latex_escape(_setting_name(columns, key))
        lines.append(name + " & " + " & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"
