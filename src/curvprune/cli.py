"""The ``curvprune`` command: list, train, prune, sweep, report.

Every user error exits with status 2 and one line on stderr (``curvprune: error: ...``), never
a traceback: `CurvpruneError` from anywhere in the library, argparse's own errors, and OS errors
on the user's paths. Anything else is a bug and keeps its traceback.

Under ``torchrun`` (``RANK``, ``WORLD_SIZE``, ... in the environment) ``train``, ``prune`` and
``sweep`` join the process group for the command's duration
(`curvprune.experiments.launch`); only rank 0
prints results. Errors that every rank would raise alike (bad options) print on rank 0 only;
errors raised while the ranks run together print on each rank that raises them, tagged.

Run options are parsed with ``argparse.SUPPRESS`` defaults, so the namespace holds only the
flags the user typed; defaults live in one place, `RunConfig`, and a sweep's YAML file sits
between the two (defaults < file < command line).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from curvprune import _cli_support as support
from curvprune._version import __version__
from curvprune.errors import CurvpruneError, InvalidArgument
from curvprune.experiments import launch

__all__ = ["build_parser", "main"]

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
    g.add_argument("--dataset", help=f"dataset name (default {d.dataset})")
    g.add_argument(
        "--data-dir",
        help="where the dataset's files are (default: search the usual "
        "places; the error lists them)",
    )
    g.add_argument("--download", action="store_true", help="let torchvision download the data")
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
        "--iterations", type=int, help="prune in this many rounds (any criterion; synflow: 100)"
    )
    g.add_argument(
        "--at",
        choices=_choices("at"),
        help=f"regime, see `curvprune list regimes` (default {d.at})",
    )
    g.add_argument(
        "--bn-warmup",
        action="store_true",
        help="init: re-estimate BatchNorm statistics before scoring",
    )
    g.add_argument(
        "--recalibrate-bn",
        action="store_true",
        help="re-estimate BatchNorm statistics after each pruning step",
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
    from curvprune.criteria.registry import criteria_taking

    g = p.add_argument_group("criterion options (each criterion takes some; default: its own)")
    for name, opt in OPTIONS.items():
        takers = ", ".join(criteria_taking(name)) or "no criterion yet"
        kwargs: dict[str, Any] = {"help": f"{opt.help} ({takers})", "dest": name}
        if opt.type is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs["type"] = opt.type
            if opt.choices is not None:
                kwargs["choices"] = opt.choices
            if opt.size:
                kwargs["metavar"] = "SIZE"
        g.add_argument(opt.flag, **kwargs)


#: Values of ``--device`` (``cuda:N`` stands for any GPU index).
DEVICES = ("auto", "cpu", "cuda", "cuda:N", "mps")


def _choices(option: str) -> tuple[str, ...]:
    """The valid values of an enumerated run option, from where the option is defined."""
    from curvprune.experiments.config import REGIMES
    from curvprune.pruning.masks import SCOPES
    from curvprune.training import LR_SCHEDULES

    return {"at": tuple(REGIMES), "scope": SCOPES, "lr_schedule": LR_SCHEDULES}[option]


def _device(text: str) -> str:
    """An argparse type for ``--device``: one of `DEVICES`, with N a GPU index."""
    index = text[len("cuda:") :] if text.startswith("cuda:") else None
    if text in DEVICES and text != "cuda:N" or (index is not None and index.isdigit()):
        return text
    raise argparse.ArgumentTypeError(
        f"unknown --device {text!r}; valid: {', '.join(DEVICES)} (N a GPU index)"
    )


def _add_output_options(p: argparse.ArgumentParser, *, out_required: bool) -> None:
    g = p.add_argument_group("output")
    g.add_argument("--out", required=out_required, help="output directory")
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
    _add_output_options(p, out_required=True)
    support.add_checkpoint_options(p, sweep=False)

    p = sub.add_parser(
        "prune", help="one pruning run; writes result.json (and model.safetensors)", **suppress
    )
    _add_run_options(p, pruning=True)
    _add_output_options(p, out_required=False)
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
    _add_output_options(p, out_required=False)
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
    return parser


_NOT_RUN_OPTIONS = ("command", "out", "quiet", "tensorboard", "config", "wandb", "verbose")


def _run_options(args: argparse.Namespace) -> dict[str, Any]:
    return {
        k: v for k, v in vars(args).items() if k not in _NOT_RUN_OPTIONS + support.CONTROL_FLAGS
    }


def _cmd_list(args: argparse.Namespace) -> None:
    from curvprune import CRITERIA
    from curvprune.data import DATASETS
    from curvprune.experiments.config import REGIMES
    from curvprune.models import MODELS

    def tags(c: Any) -> str:
        kinds = (
            ("data-free", c.data_free),
            ("structured", c.structured and c.unstructured),
            ("structured only", not c.unstructured),
        )
        flags = [t for t, on in kinds if on]
        return f" [{', '.join(flags)}]" if flags else ""

    def describe(c: Any) -> str:
        # The tags say it in one place: drop a description's "(structured only)" and the like.
        text = c.description
        for tag in tags(c).strip(" []").split(", "):
            text = text.replace(f" ({tag})", "") if tag else text
        return text + tags(c)

    external = {
        "torchvision:NAME": "any torchvision classification model, e.g. torchvision:resnet18, "
        "adapted to the dataset's channels and classes",
        "timm:NAME": "any timm model, e.g. timm:resnet18 (needs: pip install timm)",
    }
    sections = {
        "criteria": {n: describe(c) for n, c in CRITERIA.items()},
        "models": {**{n: m.description for n, m in MODELS.items()}, **external},
        "datasets": {n: d.description for n, d in DATASETS.items()},
        "regimes": REGIMES,
    }
    chosen = [args.what] if args.what else list(sections)
    for title in chosen:
        entries = sections[title]
        print(f"{title}:")
        width = max(map(len, entries), default=0)
        for name, text in entries.items():
            print(f"  {name:<{width}}  {text}")


def _wandb_logger(args: argparse.Namespace, group: str | None = None):
    """With ``--wandb PROJECT``: a function logging one result there; else None.

    The wandb package is checked now, before any work.
    """
    project = getattr(args, "wandb", None)
    if project is None:
        return None
    from curvprune.experiments.loggers import log_wandb, require_wandb

    module = require_wandb()
    return lambda result: log_wandb(project, result, group=group, wandb=module)


def _cmd_train(args: argparse.Namespace) -> None:
    from curvprune.experiments.config import RunConfig
    from curvprune.experiments.regimes import train_dense

    cfg = RunConfig.from_dict(_run_options(args)).validate(pruning=False)
    to_wandb = _wandb_logger(args)
    quiet = getattr(args, "quiet", False)
    with support.logging_for(args, args.out), launch.process_group(cfg.device):
        result = train_dense(
            cfg,
            out_dir=args.out,
            quiet=quiet,
            tensorboard=getattr(args, "tensorboard", None),
            log=support.logger.info,
            **support.checkpointing(args),
        )
        if not launch.is_main():
            return
    if to_wandb is not None:
        to_wandb(result)
    print(
        f"{cfg.model} on {cfg.dataset}: test accuracy {result['test_accuracy']:.4f} after "
        f"{cfg.epochs:g} epochs; wrote {Path(args.out) / 'model.safetensors'}"
    )


def _cmd_prune(args: argparse.Namespace) -> None:
    from curvprune.experiments.config import RunConfig
    from curvprune.experiments.regimes import run_experiment

    cfg = RunConfig.from_dict(_run_options(args)).validate()
    quiet = getattr(args, "quiet", False)
    out = getattr(args, "out", None)
    to_wandb = _wandb_logger(args)
    with support.logging_for(args, out), launch.process_group(cfg.device):
        r = run_experiment(
            cfg,
            out_dir=out,
            save_model=out is not None,
            quiet=quiet,
            tensorboard=getattr(args, "tensorboard", None),
            log=support.logger.info,
            **support.checkpointing(args),
        )
        if not launch.is_main():
            return
    if to_wandb is not None:
        to_wandb(r)
    wrote = f"; wrote {Path(out) / 'result.json'}" if out else ""
    if r["structured"]:
        latency = r["latency_ms"]
        times = ", ".join(
            f"batch {b} {latency['dense'][b]:.3g} -> {latency['pruned'][b]:.3g} ms"
            for b in latency["pruned"]
        )
        print(
            f"{r['label']} at {r['at']}, structured, {cfg.target_text()}: MACs kept "
            f"{r['macs_kept']:.4f}, parameters kept {r['params_kept']:.4f}; test accuracy "
            f"{r['test_accuracy']:.4f} (at prune {r['accuracy_at_prune']:.4f}); "
            f"{r.get('latency_device', 'cpu')} latency "
            f"{times}{wrote}"
        )
    else:
        print(
            f"{r['label']} at {r['at']}, sparsity {r['actual_sparsity']:.4f}: test accuracy "
            f"{r['test_accuracy']:.4f} (at prune {r['accuracy_at_prune']:.4f}); "
            f"collapsed layers: {', '.join(r['collapsed_layers']) or 'none'}{wrote}"
        )
    if out is None and not quiet:
        print(json.dumps({k: r[k] for k in ("layer_density", "timings")}))


def _cmd_sweep(args: argparse.Namespace) -> None:
    from curvprune.experiments import sweep
    from curvprune.experiments.report import build_report

    spec: dict[str, Any] = {}
    if getattr(args, "config", None):
        spec.update(sweep.load_sweep_file(args.config))
    cli = vars(args)
    for plural, singular in sweep.GRID_ALIASES.items():
        # A flag on the command line replaces the file's value, singular or plural.
        if plural in cli or singular in cli:
            spec.pop(plural, None)
            spec.pop(singular, None)
    spec.update({k: v for k, v in cli.items() if k not in _NOT_RUN_OPTIONS + support.CONTROL_FLAGS})
    out = cli.get("out", spec.get("out"))
    if out is None:
        raise InvalidArgument("sweep needs --out DIR (or out: DIR in the --config file)")
    quiet = bool(cli.get("quiet", spec.get("quiet", False)))
    configs = support.sweep_runs(spec, cli, quiet=quiet)
    if cli.get("dry_run"):
        return support.print_plan(configs, out)
    to_wandb = _wandb_logger(args, group=str(out))
    with support.logging_for(args, out), launch.process_group(_one_device(configs)):
        counts = sweep.run_sweep(
            configs,
            out,
            quiet=quiet,
            log=support.logger.info,
            tensorboard=cli.get("tensorboard"),
            on_result=to_wandb,
            **support.checkpointing(args, sweep=True),
        )
        if not launch.is_main():
            return
    print(build_report(out), end="")
    print(support.sweep_counts(counts, out))


def _one_device(configs: Sequence[Any]) -> str:
    """The device of a sweep's runs; under torchrun they must share one process group."""
    from curvprune.experiments.launch import resolve_device

    kinds = {resolve_device(c.device).type for c in configs}
    if len(kinds) > 1 and launch.torchrun_env() is not None:
        raise InvalidArgument(
            f"a sweep under torchrun runs on one kind of device, got {', '.join(sorted(kinds))}"
        )
    return configs[0].device if configs else "auto"


def _cmd_report(args: argparse.Namespace) -> None:
    from curvprune.experiments.report import build_report

    print(build_report(args.dir, format=args.format), end="")


def _print_error(err: Exception) -> None:
    """One line on stderr; on ranks other than 0 only for errors raised inside the group."""
    rank = getattr(err, "rank", None)
    if rank:
        print(f"curvprune: error: [rank {rank}] {err}", file=sys.stderr)
    elif launch.env_rank() == 0:
        print(f"curvprune: error: {err}", file=sys.stderr)


_COMMANDS = {
    "list": _cmd_list,
    "train": _cmd_train,
    "prune": _cmd_prune,
    "sweep": _cmd_sweep,
    "report": _cmd_report,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``curvprune`` console script; returns the exit status.

    Returns:
        0 on success, 2 on any user error (after one line on stderr), 130 on Ctrl-C.
    """
    support.safe_console()
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if args.command in ("list", "report") and launch.env_rank() != 0:
            return 0  # under torchrun: rank 0 answers alone
        _COMMANDS[args.command](args)
    except SystemExit as exit_:  # argparse: --help (0) and usage errors (2)
        return exit_.code if isinstance(exit_.code, int) else 2
    except (CurvpruneError, OSError) as err:
        # OSError: the user's paths, e.g. an unwritable --out or a directory given as a file.
        _print_error(err)
        return 2
    except KeyboardInterrupt:
        print("curvprune: interrupted", file=sys.stderr)
        return 130
    return 0
