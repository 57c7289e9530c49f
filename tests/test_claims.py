"""The claims ledger's statistics and rendering (benchmarks/claims.py), on hand-made rows."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import pytest

PATH = Path(__file__).resolve().parent.parent / "benchmarks" / "claims.py"


@pytest.fixture(scope="module")
def claims():
    spec = importlib.util.spec_from_file_location("claims_ledger", PATH)
    module = importlib.util.module_from_spec(spec)
    sys.modules["claims_ledger"] = module  # dataclasses look the module up by name
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("claims_ledger", None)


def test_t_interval_of_1_2_3(claims):
    # mean 2, s = 1, n = 3: half-width t_{0.975,2} / sqrt(3) = 4.3027 / 1.7321 = 2.4841
    mean, low, high, n = claims.t_interval([1.0, 2.0, 3.0])
    assert (mean, n) == (2.0, 3)
    assert low == pytest.approx(2 - 2.4841, abs=1e-4)
    assert high == pytest.approx(2 + 2.4841, abs=1e-4)


def test_t_interval_one_value_has_no_interval(claims):
    mean, low, high, n = claims.t_interval([0.5])
    assert (mean, n) == (0.5, 1) and math.isnan(low) and math.isnan(high)
    assert claims.sign_of(low, high) == "straddles"


def test_t_table_matches_scipy_and_is_used_without_it(claims, monkeypatch):
    pytest.importorskip("scipy")
    for df, value in claims.T_TABLE.items():
        assert claims.t_quantile(df) == pytest.approx(value, abs=1e-3)
    monkeypatch.setitem(sys.modules, "scipy.stats", None)  # import now raises ImportError
    assert claims.t_quantile(4) == 2.776
    with pytest.raises(ValueError, match="df=11"):
        claims.t_quantile(11)


@pytest.mark.parametrize(
    ("signs", "expected"),
    [
        (["above", "above", "straddles"], "reproduced"),
        (["above", "straddles"], "reproduced"),
        (["above", "straddles", "straddles"], "partly reproduced"),
        (["above", "above", "below"], "partly reproduced"),
        (["straddles", "straddles"], "inconclusive"),
        (["below", "straddles"], "not reproduced"),
        ([], "pending"),
    ],
)
def test_verdict_rule(claims, signs, expected):
    assert claims.verdict(signs) == expected


def _rows(diffs_by_x: dict[float, list[float]]) -> list[dict[str, str]]:
    """Rows for settings A and B whose per-seed differences A − B are the given ones."""
    rows = []
    for x, diffs in diffs_by_x.items():
        for seed, diff in enumerate(diffs):
            base = 0.5 + 0.01 * seed  # B varies by seed; pairing must remove it
            for label, acc in (("a", base + diff), ("b", base)):
                rows.append(
                    {"label": label, "at": "init", "sparsity": str(x), "seed": str(seed),
                     "test_accuracy": repr(acc), "num_collapsed": "0"}
                )  # fmt: skip
    return rows


def _claim(claims, **kw):
    return claims.Claim(
        name="toy",
        title="A beats B",
        quote="A beats B.",
        source="nowhere",
        protocol="hand-made rows",
        settings={"A": {"label": "a", "at": "init"}, "B": {"label": "b", "at": "init"}},
        comparisons=[claims.Comparison("A", "B")],
        **kw,
    )


def test_paired_differences_and_signs(claims):
    rows = _rows(
        {0.9: [0.020, 0.021, 0.022], 0.98: [-0.020, -0.021, -0.022], 0.99: [0.01, 0.02, 0.03]}
    )
    claim = _claim(claims)
    assert claims.paired(claim, rows, claim.comparisons[0], 0.9) == pytest.approx(
        [0.020, 0.021, 0.022]
    )
    text, signs = claims.render_comparisons(claim, rows)
    # 2.1 ± 4.303·0.1/√3 = [1.85, 2.35] points; 1, 2, 3 points: 2 ± 2.48, which straddles 0
    assert signs == ["above", "below", "straddles"]
    assert "+2.1 [+1.9, +2.3] ▲" in text
    assert "-2.1 [-2.3, -1.9] ▼" in text
    assert "+2.0 [-0.5, +4.5] ·" in text
    assert claims.verdict(signs) == "partly reproduced"


def test_table_shows_mean_std_and_seed_count(claims):
    rows = _rows({0.9: [0.1, 0.1, 0.1]})
    table = claims.render_table(_claim(claims), rows, "test_accuracy")
    assert "| A | 61.0 ± 1.0 (3) |" in table  # 0.5 + 0.01·seed + 0.1, in %
    assert "| B | 51.0 ± 1.0 (3) |" in table


def test_report_only_renders_pending_claims(claims, monkeypatch, tmp_path):
    monkeypatch.setattr(claims, "ROOT", tmp_path)
    (tmp_path / "docs").mkdir()
    assert claims.main(["--report-only"]) == 0
    text = (tmp_path / "docs" / "claims.md").read_text(encoding="utf-8")
    assert text.count("**Verdict: pending**") == len(claims.CLAIMS)
    assert "| 1a | [" in text and "| pending |" in text
    assert "curvprune sweep --config benchmarks/claims/" in text  # the commands are shown


def test_report_renders_a_run_claim_with_its_verdict(claims, monkeypatch, tmp_path):
    monkeypatch.setattr(claims, "ROOT", tmp_path)
    claim = _claim(claims, discussion="Written after the data.")
    claims.write_csv(claim.csv_path, _rows({0.9: [0.020, 0.021, 0.022], 0.98: [0.01, 0.02, 0.03]}))
    text = claims.render_claim(1, claim)
    assert "**Verdict: reproduced** (1 above, 0 below, 1 straddle of 2 key cells)." in text
    assert "Written after the data." in text


def test_collect_adds_run_options_that_results_csv_leaves_out(claims, monkeypatch, tmp_path):
    import json

    monkeypatch.setattr(claims, "ROOT", tmp_path)
    rows = [{**r, "run_id": f"run{i}"} for i, r in enumerate(_rows({0.9: [0.1, 0.2]}))]
    out = tmp_path / claims.RUNS_DIR / "toy"
    claims.write_csv(out / "results.csv", rows)
    for i, row in enumerate(rows):
        run = out / "runs" / row["run_id"]
        run.mkdir(parents=True)
        config = {"recalibrate_bn": i % 2 == 0, "seed": int(row["seed"])}
        (run / "result.json").write_text(json.dumps({"config": config}), encoding="utf-8")
    claim = _claim(claims, sweeps=[("toy.yaml", "toy")], config_columns=["recalibrate_bn"])
    claim.settings = {"A": {"label": "a", "recalibrate_bn": True}, "B": {"label": "b"}}
    claim.figure = False
    claims.collect(claim)
    got = claims.read_csv(claim.csv_path)
    assert [(r["label"], r["recalibrate_bn"]) for r in got] == [
        ("a", "True"), ("b", "False"), ("a", "True"), ("b", "False")
    ]  # fmt: skip
    assert claims.setting_of(claim, got[0]) == "A"


def test_compute_cost_sums_the_runs_wall_times(claims):
    rows = [{"total_s": "30"}, {"total_s": "90.5"}, {"total_s": ""}]
    assert claims.compute_cost(rows).startswith("Compute: 3 runs, 2 min of one core in all")
    assert claims.compute_cost([{"seed": "0"}]) == ""
