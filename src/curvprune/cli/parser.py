"""The ``curvprune`` command's argument parser: every subcommand and flag.

Run options are parsed with ``argparse.SUPPRESS`` defaults, so the namespace holds only the
flags the user typed; defaults live in one place, `RunConfig`, and a sweep's YAML file sits
between the two (defaults < file < command line). Criterion flags are generated from
`curvprune.criteria.OPTIONS`.
"""

from __future__ import annotations

import argparse
from typing import Any

from curvprune._version import __version__
from curvprune.cli import support
from curvprune.cli.export import add_export_parser
from curvprune.experiments import launch

__all__ = ["build_parser"]

_D = None  # filled lazily: RunConfig() for the defaults shown in --help


def _defaults():
    global _D
    if _D is None:
        from curvprune.experiments.config import RunConfig

        _D = RunConfig()
    return _D


def _csv(kind: type):
    """An argparse type for comma-separated values of ``kind``."""

    def parse(text: str) -> list:
        items = [t.strip() for t in text.split(",") if t.strip()]
        if not items:
            raise ValueError(text)
        return [kind(t) for t in items]

    parse.__name__ = f"comma-separated {kind.__name__}"
    return parse


def _add_run_options(p: argparse.ArgumentParser, *, pruning: bool) -> None:
    d = _defaults()
    g = p.add_argument_group("model and data")
    g.add_argument("--model", help=f"model name, see `curvprune list models` (default {d.model})")
    g.add_argument(
        "--pretrained",
        action="store_true",
        help="torchvision:NAME / timm:NAME: start from their pretrained weights (from their "
        "caches; a new head for another class count)",
    )
    g.add_argument("--dataset", help=f"dataset name (default {d.dataset})")
    g.add_argument(
        "--data-dir",
        help="where the dataset's files are (default: search the usual "
        "places; the error lists them)",
    )
    g.add_argument("--download", action="store_true", help="let torchvision download the data")
    g.add_argument("--val-split", type=float, metavar="F",
                   help="hold out F of each class; test the best epoch's model")  # fmt: skip
    g.add_argument(
        "--train-limit",
        type=int,
        metavar="N",
        help="train on a random subset of N training examples, drawn with --seed (the same "
        "subset for the same seed)",
    )
    g.add_argument(
        "--no-augment",
        dest="augment",
        action="store_false",
        help="turn off training-set augmentation",
    )
    g = p.add_argument_group("training")
    g.add_argument(
        "--epochs",
        type=float,
        help=f"epochs of training after pruning; 0 evaluates "
        f"right after pruning (default {d.epochs:g})",
    )
    g.add_argument("--batch-size", type=int, help=f"default {d.batch_size}")
    g.add_argument("--lr", type=float, help=f"peak SGD learning rate (default {d.lr:g})")
    g.add_argument("--momentum", type=float, help=f"default {d.momentum:g}")
    g.add_argument("--weight-decay", type=float, help=f"default {d.weight_decay:g}")
    g.add_argument(
        "--lr-schedule", choices=_choices("lr_schedule"), help=f"default {d.lr_schedule}"
    )
    g.add_argument(
        "--milestones",
        type=_csv(float),
        help="multistep epochs, e.g. 30,60 (default: 50%% and 75%% of the epochs)",
    )
    g.add_argument("--gamma", type=float, help=f"multistep decay factor (default {d.gamma:g})")
    g.add_argument("--seed", type=int, help=f"default {d.seed}")
    g.add_argument(
        "--device",
        type=_device,
        metavar="{" + ",".join(DEVICES) + "}",
        help="auto (cuda if available, else cpu), cpu, cuda, cuda:N or mps (default auto)",
    )
    g.add_argument(
        "--threads",
        type=int,
        help="CPU threads for torch (default: torch's; 1 is fastest for "
        "small models on shared cores)",
    )
    if not pruning:
        return
    g = p.add_argument_group("pruning")
    g.add_argument("--criterion", help=f"see `curvprune list criteria` (default {d.criterion})")
    g.add_argument(
        "--sparsity",
        type=float,
        help=f"fraction of prunable weights removed, in [0, 1) (default {d.sparsity:g})",
    )
    g.add_argument(
        "--scope",
        choices=_choices("scope"),
        help=f"one threshold across tensors or one per tensor (default {d.scope})",
    )
    g.add_argument(
        "--score-samples",
        type=int,
        help=f"training examples used for scoring, at most the training set "
        f"(default {d.score_samples})",
    )
    g.add_argument(
        "--score-per-class",
        type=int,
        metavar="N",
        help="score on N training examples of each class instead of --score-samples (the HTS "
        "paper uses 10)",
    )
    g.add_argument(
        "--score-batch-size",
        type=int,
        metavar="B",
        help="samples per scoring batch (default: the criterion's code's, 1 for hp and hts "
        "as the HTS code, whose probes are drawn per batch; else --batch-size)",
    )
    g.add_argument(
        "--score-mode",
        choices=_choices("score_mode"),
        help="train/eval flags while scoring (default: eval; train for oba/oba_full "
        "--variant oba_code, as the OBA code)",
    )
    g.add_argument("--iterations", type=int,
                   help="rounds of pruning (default: the criterion's, e.g. oba 49)")  # fmt: skip
    g.add_argument(
        "--schedule",
        choices=_choices("schedule"),
        help="sparsity targets of the rounds: linear s·t/k (woodfisher's default), exponential "
        "kept (1-s)^(t/k) (the others'), exponential_pruned s^(t/k) (the HTS code's SynFlow)",
    )
    g.add_argument("--exclude", type=_csv(str), metavar="PATTERN[,PATTERN]",
                   help="keep weights dense whose names match, e.g. 'fc*,conv1.*'")  # fmt: skip
    g.add_argument(
        "--at",
        choices=_choices("at"),
        help=f"regime, see `curvprune list regimes` (default {d.at})",
    )
    g.add_argument(
        "--bn-warmup",
        action="store_true",
        help="init: re-estimate BatchNorm statistics over one pass of the training set before "
        "scoring (the HTS paper's warm-up)",
    )
    g.add_argument(
        "--recalibrate-bn",
        action="store_true",
        help="re-estimate BatchNorm statistics over the training set after each pruning step",
    )
    g.add_argument(
        "--prune-after",
        type=float,
        help=f"early: epochs before pruning, fractions allowed (default {d.prune_after:g})",
    )
    g.add_argument("--checkpoint", help="trained/gradual: start from this .safetensors (or .pt)")
    g.add_argument(
        "--pretrain-epochs",
        type=float,
        help="trained/gradual: train this long before pruning (no --checkpoint)",
    )
    g.add_argument(
        "--initial-sparsity",
        type=float,
        help=f"gradual: sparsity of the first step (default {d.initial_sparsity:g})",
    )
    g.add_argument(
        "--start-epoch",
        type=float,
        help=f"gradual: first pruning epoch (default {d.start_epoch:g})",
    )
    g.add_argument(
        "--end-epoch", type=float, help=f"gradual: last pruning epoch (default {d.end_epoch:g})"
    )
    g.add_argument(
        "--frequency",
        type=float,
        help=f"gradual: epochs between pruning steps (default {d.frequency:g})",
    )
    g = p.add_argument_group("structured pruning: remove whole channels (--at init or trained)")
    g.add_argument(
        "--structured",
        action="store_true",
        help="remove whole channels, giving a physically smaller model; criteria: "
        "see `curvprune list criteria` [structured]",
    )
    g.add_argument(
        "--channel-sparsity",
        type=float,
        metavar="S",
        help="fraction of channels removed, in [0, 1)",
    )
    g.add_argument(
        "--macs-target",
        type=float,
        metavar="F",
        help="kept fraction of the dense MACs, in (0, 1]: prune until at most F are left "
        "(in --iterations rounds)",
    )
    _add_criterion_options(p)


def _add_criterion_options(p: argparse.ArgumentParser) -> None:
    """One flag per declared criterion option (`curvprune.criteria.OPTIONS`), help included."""
    from curvprune.criteria import OPTIONS
    from curvprune.criteria.registry import criteria_taking, option_choices

    g = p.add_argument_group("criterion options (each criterion takes some; default: its own)")
    for name, opt in OPTIONS.items():
        takers = ", ".join(criteria_taking(name)) or "no criterion yet"
        kwargs: dict[str, Any] = {"help": f"{opt.help} ({takers})", "dest": name}
        if opt.type is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs["type"] = opt.type
            choices = option_choices(name)  # each criterion's own, checked per criterion later
            if choices is not None:
                kwargs["choices"] = choices
            if opt.size:
                kwargs["metavar"] = "SIZE"
        g.add_argument(opt.flag, **kwargs)


#: Values of ``--device`` (``cuda:N`` stands for any GPU index).
DEVICES = ("auto", "cpu", "cuda", "cuda:N", "mps")


def _choices(option: str) -> tuple[str, ...]:
    """The valid values of an enumerated run option, from where the option is defined."""
    from curvprune._core.state import SCORING_MODES
    from curvprune.experiments.config import REGIMES
    from curvprune.pruning import SCHEDULES
    from curvprune.pruning.masks import SCOPES
    from curvprune.training import LR_SCHEDULES

    choices = {"at": tuple(REGIMES), "scope": SCOPES, "lr_schedule": LR_SCHEDULES}
    choices["score_mode"] = SCORING_MODES
    return {**choices, "schedule": SCHEDULES}[option]


def _device(text: str) -> str:
    """An argparse type for ``--device``: one of `DEVICES`, with N a GPU index."""
    index = text[len("cuda:") :] if text.startswith("cuda:") else None
    if text in DEVICES and text != "cuda:N" or (index is not None and index.isdigit()):
        return text
    raise argparse.ArgumentTypeError(
        f"unknown --device {text!r}; valid: {', '.join(DEVICES)} (N a GPU index)"
    )


def _add_output_options(p: argparse.ArgumentParser, *, config: bool) -> None:
    g = p.add_argument_group("output")
    if config:  # sweep declares --config with its grid flags
        g.add_argument("--config", help="YAML file with the flags' names as keys (one value each)")
    g.add_argument(
        "--print-config",
        action="store_true",
        help="print the resolved configuration (defaults < --config < flags) as YAML and exit",
    )
    g.add_argument("--out", help="output directory")
    g.add_argument("--quiet", action="store_true", help="no progress bars or log lines")
    g.add_argument(
        "--tensorboard",
        metavar="DIR",
        help="also log scalars to TensorBoard in DIR, and each run's options and final "
        "metrics to its HParams tab (needs the tensorboard package)",
    )
    g.add_argument(
        "--wandb",
        metavar="PROJECT",
        help="also log each finished run's options and final metrics to Weights & Biases "
        "project PROJECT (needs the wandb package)",
    )


def _report_formats() -> tuple[str, ...]:
    from curvprune.experiments.report import REPORT_FORMATS

    return tuple(REPORT_FORMATS)


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line on stderr, like every other error."""

    def error(self, message: str):
        # Every rank parses the same arguments: one copy of the message is enough.
        text = f"{self.prog}: error: {message} (see {self.prog} --help)\n"
        self.exit(2, text if launch.env_rank() == 0 else None)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``curvprune`` command."""
    parser = _Parser(
        prog="curvprune",
        description="Curvature-based pruning experiments: prune at init, early, after training "
        "or gradually, and sweep criteria x sparsities x seeds.",
    )
    parser.add_argument("--version", action="version", version=f"curvprune {__version__}")
    sub = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=_Parser
    )
    suppress = {"argument_default": argparse.SUPPRESS}

    p = sub.add_parser("list", help="list criteria, models, datasets and regimes")
    p.add_argument("what", nargs="?", choices=["criteria", "models", "datasets", "regimes"])

    p = sub.add_parser(
        "train", help="train a dense model; writes model.safetensors, result.json", **suppress
    )
    _add_run_options(p, pruning=False)
    _add_output_options(p, config=True)
    support.add_checkpoint_options(p, sweep=False)

    p = sub.add_parser(
        "prune", help="one pruning run; writes result.json (and model.safetensors)", **suppress
    )
    _add_run_options(p, pruning=True)
    _add_output_options(p, config=True)
    support.add_checkpoint_options(p, sweep=False)

    p = sub.add_parser(
        "sweep", help="run a grid; resumable; writes results.csv, summary, plots", **suppress
    )
    g = p.add_argument_group(
        "grid (each also accepted by --config; a YAML list makes any option an axis)"
    )
    g.add_argument("--config", help="YAML file with the flags' names as keys")
    g.add_argument("--criteria", type=_csv(str), help="comma-separated criteria")
    g.add_argument("--sparsities", type=_csv(float), help="comma-separated sparsities")
    g.add_argument("--seeds", type=_csv(int), help="comma-separated seeds")
    g.add_argument(
        "--channel-sparsities",
        type=_csv(float),
        help="comma-separated channel sparsities (with --structured)",
    )
    g.add_argument(
        "--macs-targets",
        type=_csv(float),
        help="comma-separated kept fractions of MACs (with --structured)",
    )
    _add_run_options(p, pruning=True)
    _add_output_options(p, config=False)
    support.add_checkpoint_options(p, sweep=True)  # and --dry-run, --shard, --max-runs

    p = sub.add_parser("report", help="rebuild summary.md and the plots from DIR/results.csv")
    p.add_argument("dir", help="a sweep's output directory")
    p.add_argument(
        "--format",
        choices=_report_formats(),
        default="markdown",
        help="table printed and written next to summary.md: markdown (summary.md), latex "
        "(summary.tex, booktabs, mean ± std, best in bold) or csv (summary_table.csv, "
        "aggregated over seeds); default markdown",
    )
    add_export_parser(sub)
    return parser
