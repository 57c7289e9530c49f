"""Experiments: run configuration, the runner and its regimes, sweeps, reports, launching.

The ``curvprune`` command (`curvprune.cli`) is a thin layer over this package; everything a
run does is reachable from Python too (`RunConfig`, `run_experiment`, `run_sweep`,
`build_report`).
"""
