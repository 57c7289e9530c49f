"""Run the Fashion-MNIST benchmarks and regenerate docs/results.md.

Usage::

    python benchmarks/run_experiments.py            # the reduced CPU setting (~20 min on 2 cores)
    python benchmarks/run_experiments.py --full     # the settings in benchmarks/configs/*.yaml
    python benchmarks/run_experiments.py --only pai_lenet300 --doc-only

Every sweep is the ``curvprune sweep`` command printed in the document, run as a subprocess;
the reduced setting adds command-line flags that override the YAML file's values (fewer seeds,
sparsities and epochs). Sweeps resume, so re-running only fills in what is missing, and
``--doc-only`` rebuilds the document from the results already on disk.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = Path("benchmarks/configs")
DENSE = "{runs}/lenet300-dense/model.safetensors"


@dataclass
class Experiment:
    """One section of the document: sweeps sharing an output directory.

    Attributes:
        name: Output directory name and image prefix.
        title: Section heading.
        about: What the section measures (static text).
        configs: YAML files under benchmarks/configs, all swept into one directory.
        reduced: Flags added in the reduced setting, per config file (``"*"`` for all).
        needs_dense: Train the dense LeNet-300-100 checkpoint first (and pass it).
    """

    name: str
    title: str
    about: str
    configs: list[str]
    reduced: dict[str, list[str]] = field(default_factory=dict)
    needs_dense: bool = False


EXPERIMENTS = [
    Experiment(
        name="pai_lenet300",
        title="1. Pruning at initialization: LeNet-300-100, init against early",
        about="All PaI criteria, HP and HTS with temperature 1 and 200, pruned at "
        "initialization (`at=init`); a subset also pruned after a quarter epoch (`at=early`, "
        "which then trains `--epochs` more, so it sees 0.25 epochs more training in total).",
        configs=["pai_lenet300.yaml", "pai_lenet300_early.yaml"],
        reduced={
            "*": ["--seeds", "0", "--sparsities", "0.9,0.98,0.995", "--epochs", "1"],
            "pai_lenet300_early.yaml": ["--criteria", "magnitude,snip,fts,hts"],
        },
    ),
    Experiment(
        name="pai_lenet5_bn",
        title="1. Pruning at initialization: LeNet-5 with BatchNorm, with and without --bn-warmup",
        about="BatchNorm statistics re-estimated before scoring (`bn_warmup=True`) or left at "
        "their initial values (mean 0, variance 1); scores are computed in eval mode, so they see "
        "those statistics. Training then uses batch statistics either way.",
        configs=["pai_lenet5_bn.yaml"],
        reduced={
            "*": [
                "--seeds",
                "0",
                "--sparsities",
                "0.9,0.98",
                "--epochs",
                "2",
                "--train-limit",
                "10000",
                "--criteria",
                "magnitude,snip,grasp,synflow,fts,hts",
            ],
        },  # fmt: skip
    ),
    Experiment(
        name="oneshot_lenet300",
        title="2. One-shot pruning after training: LeNet-300-100",
        about="A trained LeNet-300-100 pruned once; `epochs=0` is the accuracy right after "
        "pruning, `epochs=1` after one epoch of fine-tuning (lr 0.01, cosine). WoodFisher with "
        "1 and 3 recomputation rounds; OBA plain and in its unstructured setting "
        "(`normalize=max, add_magnitude=True`).",
        configs=[
            "oneshot_lenet300.yaml",
            "oneshot_lenet300_woodfisher_rounds.yaml",
            "oneshot_lenet300_oba_unstructured.yaml",
        ],
        reduced={"*": ["--seeds", "0", "--sparsities", "0.5,0.8,0.9,0.95,0.97"]},
        needs_dense=True,
    ),
    Experiment(
        name="gradual_lenet300",
        title="3. Gradual pruning: LeNet-300-100 to 0.9 and 0.97",
        about="From the trained checkpoint, the cubic schedule from sparsity 0.5 to the target, "
        "then fine-tuning; magnitude against WoodFisher.",
        configs=["gradual_lenet300.yaml"],
        reduced={"*": ["--seeds", "0", "--end-epoch", "2", "--frequency", "0.5", "--epochs", "1"]},
        needs_dense=True,
    ),
]


def dense_command(runs: Path, full: bool) -> list[str]:
    epochs = "20" if full else "3"
    return [
        "curvprune", "train", "--model", "lenet300", "--dataset", "fashion-mnist",
        "--epochs", epochs, "--lr", "0.05", "--seed", "0", "--threads", "1", "--quiet",
        "--out", str(runs / "lenet300-dense"),
    ]  # fmt: skip


def sweep_commands(exp: Experiment, runs: Path, full: bool) -> list[list[str]]:
    commands = []
    for config in exp.configs:
        cmd = ["curvprune", "sweep", "--config", str(CONFIGS / config)]
        if not full:
            cmd += exp.reduced.get("*", []) + exp.reduced.get(config, [])
        if exp.needs_dense:
            cmd += ["--checkpoint", DENSE.format(runs=runs)]
        cmd += ["--out", str(runs / exp.name)]
        commands.append(cmd)
    return commands


def execute(cmd: list[str]) -> float:
    """Run a curvprune command with this interpreter; return its wall time in seconds."""
    print("$", shlex.join(cmd), flush=True)
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "curvprune", *cmd[1:]], cwd=ROOT,
                          stdout=subprocess.DEVNULL)  # fmt: skip
    if done.returncode != 0:
        sys.exit(f"command failed with status {done.returncode}: {shlex.join(cmd)}")
    return time.perf_counter() - start


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def observations(rows: list[dict[str, str]]) -> list[str]:
    """Facts computed from the table: the best setting per sparsity, and layer collapse."""
    varying = [c for c in ("at", "bn_warmup", "epochs") if len({r[c] for r in rows}) > 1]

    def setting(r):
        return " ".join([r["label"]] + [f"{c}={r[c]}" for c in varying])

    by = defaultdict(list)
    for r in rows:
        by[(float(r["sparsity"]), setting(r))].append(float(r["test_accuracy"]))
    lines = []
    for s in sorted({k[0] for k in by}):
        cands = {name: statistics.fmean(v) for (sp, name), v in by.items() if sp == s}
        top = max(cands.values())
        best = [name for name, acc in cands.items() if acc == top]
        worst = min(cands, key=cands.get)
        tie = " (tie)" if len(best) > 1 else ""
        low = "" if cands[worst] == top else f", worst {worst} ({100 * cands[worst]:.2f}%)"
        lines.append(f"- sparsity {s:g}: best {', '.join(best)}{tie} ({100 * top:.2f}%){low}")
    collapsed = sorted(
        {(setting(r), float(r["sparsity"]), r["collapsed_layers"]) for r in rows
         if r.get("collapsed_layers")}
    )  # fmt: skip
    if collapsed:
        lines.append("- layer collapse (a tensor with no weight left):")
        lines += [
            f"  - {name} at {s:g}: {layers.replace(';', ', ')}" for name, s, layers in collapsed
        ]
    else:
        lines.append("- no layer collapsed in any run")
    return lines


def structured_section(path: Path) -> list[str]:
    """The "Results" section of docs/structured.md (written by bench_structured.py)."""
    if not path.is_file():
        return []
    text = path.read_text(encoding="utf-8").split("\n## Results\n", 1)
    if len(text) < 2:
        return []
    body = text[1].split("\n## ", 1)[0].strip()
    return [
        "## Structured pruning: accuracy against MACs kept",
        "",
        "From `benchmarks/bench_structured.py` (see [structured.md](structured.md)):",
        "",
        body,
    ]


def write_doc(doc: Path, runs: Path, full: bool, timings: dict[str, float]) -> None:
    images = doc.parent / "results"
    images.mkdir(parents=True, exist_ok=True)
    setting = "full" if full else "reduced"
    lines = [
        "# Benchmark results",
        "",
        "Generated by `python benchmarks/run_experiments.py"
        + ("" if not full else " --full")
        + "`; do not edit by hand.",
        "",
        f"Setting: **{setting}**. Machine: {platform.machine()}, {torch.get_num_threads()} "
        f"CPU threads available, torch {torch.__version__}, Python {platform.python_version()}; "
        "every run on one CPU thread, data: real Fashion-MNIST (60000 train / 10000 test).",
        "",
    ]
    if not full:
        lines += [
            "**This is a reduced run, sized to finish in about 25 minutes on 2 shared cores:** "
            "one seed "
            "instead of three, fewer sparsities, 1-2 training epochs instead of 20, a 10000-image "
            "training subset for LeNet-5, and a 3-epoch dense checkpoint for the after-training "
            "experiments. Absolute accuracies are therefore far below converged ones and "
            "differences of a point or two are within seed noise. The exact commands are "
            "listed with each table; the full setting is each YAML file without the extra "
            "flags (`--full`).",
            "",
        ]
    lines += [
        "Dense checkpoint for sections 2 and 3:",
        "",
        "```",
        shlex.join(dense_command(runs, full)),
        "```",
        "",
    ]
    dense_result = runs / "lenet300-dense" / "result.json"
    if dense_result.is_file():
        acc = json.loads(dense_result.read_text())["test_accuracy"]
        lines += [f"Dense LeNet-300-100 test accuracy: {100 * acc:.2f}%.", ""]
    for exp in EXPERIMENTS:
        out = runs / exp.name
        lines += [f"## {exp.title}", "", exp.about, "", "```"]
        lines += [shlex.join(c) for c in sweep_commands(exp, runs, full)]
        lines += ["```", ""]
        if not (out / "summary.md").is_file():
            lines += ["Not run yet.", ""]
            continue
        summary = (out / "summary.md").read_text(encoding="utf-8").splitlines()
        lines += [line for line in summary[2:]] + [""]
        rows = read_rows(out / "results.csv")
        lines += ["Observations (computed from results.csv):", ""] + observations(rows) + [""]
        if exp.name in timings:
            lines += [f"Wall time of these sweeps: {timings[exp.name] / 60:.1f} min.", ""]
        for plot in ("accuracy_vs_sparsity", "layer_density"):
            target = images / f"{exp.name}_{plot}.png"
            shutil.copyfile(out / f"{plot}.png", target)
            lines += [f"![{exp.name} {plot}](results/{target.name})", ""]
        shutil.copyfile(out / "results.csv", images / f"{exp.name}.csv")
        lines += [f"Raw rows: [results/{exp.name}.csv](results/{exp.name}.csv).", ""]
    lines += [
        f"Total wall time of all sweeps: {sum(timings.values()) / 60:.1f} min "
        "(one process at a time, on one thread).",
        "",
        "## Full-scale configurations (not run here)",
        "",
        "Ready for a machine with a GPU and the data (`--data-dir` or `$CURVPRUNE_DATA`):",
        "",
    ]
    for cfg in sorted(CONFIGS.glob("paper_*.yaml")) if CONFIGS.is_dir() else []:
        text = cfg.read_text(encoding="utf-8").splitlines()
        about = " ".join(line.lstrip("# ") for line in text if line.startswith("#"))
        lines += [f"- `curvprune sweep --config {cfg} --out runs/{cfg.stem}`: {about}"]
    lines += [""] + structured_section(doc.parent / "structured.md")
    doc.write_text("\n".join(lines).rstrip() + "\n", encoding="utf-8")
    print(f"wrote {doc}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="the YAML files' full settings")
    parser.add_argument("--only", help="comma-separated experiment names")
    parser.add_argument("--doc-only", action="store_true", help="rebuild the document only")
    parser.add_argument("--doc", default="docs/results.md")
    args = parser.parse_args()
    os.chdir(ROOT)  # every path below, and in the printed commands, is relative to the repo
    runs = Path("benchmarks/runs") / ("full" if args.full else "reduced")
    chosen = set(args.only.split(",")) if args.only else {e.name for e in EXPERIMENTS}
    timings_file = runs / "timings.json"
    timings = json.loads(timings_file.read_text()) if timings_file.is_file() else {}
    if not args.doc_only:
        wanted = any(e.needs_dense and e.name in chosen for e in EXPERIMENTS)
        if wanted and not Path(DENSE.format(runs=runs)).is_file():
            timings["dense"] = execute(dense_command(runs, args.full))
        for exp in EXPERIMENTS:
            if exp.name in chosen:
                # A resumed sweep is quick; keep the time of the run that did the work.
                took = sum(execute(cmd) for cmd in sweep_commands(exp, runs, args.full))
                timings[exp.name] = max(took, timings.get(exp.name, 0.0))
        timings_file.write_text(json.dumps(timings, indent=2))
    write_doc(Path(args.doc), runs, args.full, timings)


if __name__ == "__main__":
    main()
