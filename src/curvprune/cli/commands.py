"""The ``curvprune`` subcommands: each turns parsed arguments into library calls and prints."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from curvprune.cli import support
from curvprune.cli.export import run_export
from curvprune.errors import InvalidArgument
from curvprune.experiments import launch

__all__ = ["COMMANDS"]

_NOT_RUN_OPTIONS = (
    "command",
    "out",
    "quiet",
    "tensorboard",
    "config",
    "wandb",
    "verbose",
    "print_config",
)


def _run_options(args: argparse.Namespace) -> dict[str, Any]:
    skip = _NOT_RUN_OPTIONS + support.CONTROL_FLAGS
    return {k: v for k, v in vars(args).items() if k not in skip}


def _run_config(args: argparse.Namespace, *, pruning: bool) -> Any:
    """The run's `RunConfig`: defaults < ``--config FILE.yaml`` < flags, validated once."""
    from curvprune.experiments.config import TUPLE_OPTIONS, RunConfig
    from curvprune.experiments.sweep import load_sweep_file

    spec: dict[str, Any] = {}
    if getattr(args, "config", None):
        spec = load_sweep_file(args.config)
        for key in ("out", "quiet"):  # where and how to write, as in a sweep file
            if key in spec and not hasattr(args, key):
                setattr(args, key, spec[key])
            spec.pop(key, None)
        grid = [
            k
            for k, v in spec.items()
            if isinstance(v, list)
            and (k not in TUPLE_OPTIONS or any(isinstance(x, list) for x in v))
        ]
        if grid:
            raise InvalidArgument(
                f"{args.config}: {', '.join(grid)} is a list, which makes a grid of runs; run "
                "the file with `curvprune sweep`, or give one value"
            )
    spec.update(_run_options(args))
    return RunConfig.from_dict(spec).validate(pruning=pruning)


def _print_config(cfg: Any) -> None:
    """The resolved configuration as YAML that ``--config`` reads back."""
    import yaml

    print(yaml.safe_dump(cfg.to_dict(), sort_keys=False, allow_unicode=True), end="")


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
            if title == "criteria" and _choice_text(CRITERIA[name]):
                print(f"  {'':<{width}}    valid: {_choice_text(CRITERIA[name])}")


def _choice_text(crit: Any) -> str:
    """Each of the criterion's ``str`` options with its own valid values (from its scores)."""
    parts = []
    for option in dict.fromkeys((*crit.options, *crit.channel_options)):
        weights = crit.choices(option) if crit.unstructured else None
        channels = crit.choices(option, structured=True) if crit.structured else None
        if weights is None and channels is None:
            continue
        text = f"--{option.replace('_', '-')} " + "|".join(weights or channels)
        if weights and channels and weights != channels:
            text += f" (channels: {'|'.join(channels)})"
        elif crit.unstructured and crit.structured:
            text += " (channels)" if weights is None else " (weights)" * (channels is None)
        parts.append(text)
    return "; ".join(parts)


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


def _logged_run(run: Any, args: argparse.Namespace, cfg: Any, out: Any, **kwargs: Any):
    """``run(cfg, ...)`` with the flags' logging, process group and checkpointing.

    ``run`` is `train_dense` or `run_experiment`. Returns its result on the main rank, None
    on the others.
    """
    with support.logging_for(args, out), launch.process_group(cfg.device):
        result = run(
            cfg,
            out_dir=out,
            quiet=getattr(args, "quiet", False),
            tensorboard=getattr(args, "tensorboard", None),
            log=support.logger.info,
            **support.checkpointing(args),
            **kwargs,
        )
        return result if launch.is_main() else None  # asked while the group is up


def _cmd_train(args: argparse.Namespace) -> None:
    from curvprune.experiments.regimes import train_dense

    cfg = _run_config(args, pruning=False)
    if getattr(args, "print_config", False):
        return _print_config(cfg)
    if getattr(args, "out", None) is None:
        raise InvalidArgument("train needs --out DIR (or out: DIR in the --config file)")
    to_wandb = _wandb_logger(args)
    result = _logged_run(train_dense, args, cfg, args.out)
    if result is None:
        return
    if to_wandb is not None:
        to_wandb(result)
    print(
        f"{cfg.model} on {cfg.dataset}: test accuracy {result['test_accuracy']:.4f} after "
        f"{cfg.epochs:g} epochs; wrote {Path(args.out) / 'model.safetensors'}"
    )


def _cmd_prune(args: argparse.Namespace) -> None:
    from curvprune.experiments.regimes import run_experiment

    cfg = _run_config(args, pruning=True)
    if getattr(args, "print_config", False):
        return _print_config(cfg)
    quiet = getattr(args, "quiet", False)
    out = getattr(args, "out", None)
    to_wandb = _wandb_logger(args)
    r = _logged_run(run_experiment, args, cfg, out, save_model=out is not None)
    if r is None:
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
    quiet = bool(cli.get("quiet", spec.get("quiet", False)))
    if cli.get("print_config"):
        import yaml

        print(yaml.safe_dump(spec, sort_keys=False, allow_unicode=True), end="")
        print(f"# {len(sweep.expand_grid(spec))} runs")
        return
    if out is None:
        raise InvalidArgument("sweep needs --out DIR (or out: DIR in the --config file)")
    configs = support.sweep_runs(spec, cli, quiet=quiet)
    if cli.get("dry_run"):
        return support.print_plan(configs, out)
    to_wandb = _wandb_logger(args, group=str(out))
    with support.logging_for(args, out, quiet=quiet), launch.process_group(_one_device(configs)):
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


#: Subcommand name -> the function that runs it.
COMMANDS = {
    "list": _cmd_list,
    "train": _cmd_train,
    "prune": _cmd_prune,
    "sweep": _cmd_sweep,
    "report": _cmd_report,
    "export": run_export,
}
