"""Structured pruning on Fashion-MNIST: accuracy against MACs kept, and measured speed-up.

A small CIFAR-style ResNet-20 (1 input channel) is trained briefly, then for each criterion and
each kept fraction of MACs a copy is pruned with `prune_to_macs` (channels physically removed),
fine-tuned for one epoch and evaluated. Latency is the median CPU time of a forward pass at
batch 1 and 64; each pruned model is timed right after the dense one, so that both see the same
background load, and the speed-up is their ratio.

Prints a Markdown report with the exact command (``--out FILE`` also writes it, ``--json FILE``
the raw numbers); docs/structured.md shows it.

Run: ``.venv/bin/python benchmarks/bench_structured.py`` (defaults: about 17 min on one CPU
thread; ``--train-limit`` / ``--finetune-limit`` / ``--test-limit`` trade time for noise).
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import statistics
import sys
import time
from pathlib import Path

import torch

from curvprune.data import load_data
from curvprune.models import build_model
from curvprune.structured import count_params_and_macs, measure_latency, prune_to_macs
from curvprune.training import Trainer, evaluate, seed_everything


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="resnet20")
    p.add_argument("--criteria", nargs="+", default=["oba", "taylor", "l1", "fisher"])
    p.add_argument("--targets", nargs="+", type=float, default=[0.7, 0.5, 0.3])
    p.add_argument("--pretrain-epochs", type=float, default=3)
    p.add_argument("--finetune-epochs", type=float, default=1)
    p.add_argument("--train-limit", type=int, default=10000, help="pre-training samples")
    p.add_argument("--finetune-limit", type=int, default=5000, help="fine-tuning samples")
    p.add_argument("--test-limit", type=int, default=2000, help="test samples evaluated")
    p.add_argument("--score-samples", type=int, default=256)
    p.add_argument("--iterative-steps", type=int, default=1)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--finetune-lr", type=float, default=0.01)
    p.add_argument("--repeats", type=int, default=15, help="timed passes per latency")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--out", default=None, help="Markdown report to write")
    p.add_argument("--json", default=None, help="raw results to write")
    return p.parse_args(argv)


def test_batches(data, limit: int) -> list:
    out, seen = [], 0
    for x, y in data.test:
        take = min(len(y), limit - seen)
        out.append((x[:take], y[:take]))
        seen += take
        if seen >= limit:
            break
    return out


def latency_pair(dense, pruned, x1, repeats: int) -> dict:
    """Dense and pruned medians from the same time window, per batch size."""
    out = {}
    for b in (1, 64):
        d = measure_latency(dense, x1, batch_sizes=(b,), repeats=repeats)[b]
        p = measure_latency(pruned, x1, batch_sizes=(b,), repeats=repeats)[b]
        out[b] = {"dense_ms": d, "pruned_ms": p, "speedup": d / p}
    return out


def main(argv=None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    seed_everything(args.seed)
    started = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - started:7.1f}s] {msg}", file=sys.stderr, flush=True)

    data = load_data("fashion-mnist", args.data_dir, seed=args.seed, train_limit=args.train_limit)
    tune = load_data(
        "fashion-mnist", args.data_dir, seed=args.seed + 1, train_limit=args.finetune_limit
    )
    test = test_batches(data, args.test_limit)
    info = data.info
    model = build_model(
        args.model,
        in_channels=info.in_channels,
        num_classes=info.num_classes,
        image_size=info.image_size,
        seed=args.seed,
    )
    Trainer(model, data.train, epochs=args.pretrain_epochs, lr=args.lr).train_all()
    model.eval()
    dense_acc = evaluate(model, test).accuracy
    x1 = test[0][0][:1]
    dense_params, dense_macs = count_params_and_macs(model, x1)
    log(f"dense {args.model}: accuracy {dense_acc:.4f}, {dense_params} params, {dense_macs} MACs")
    batches = data.scoring_batches(args.score_samples, 128)

    rows = []
    for criterion in args.criteria:
        for target in args.targets:
            t0 = time.perf_counter()
            pruned = prune_to_macs(
                model,
                criterion,
                batches,
                macs_target=target,
                example_inputs=x1,
                iterative_steps=args.iterative_steps,
            )
            prune_s = time.perf_counter() - t0
            params, macs = count_params_and_macs(pruned, x1)
            before = evaluate(pruned, test).accuracy
            seed_everything(args.seed)
            tuner = Trainer(pruned, tune.train, epochs=args.finetune_epochs, lr=args.finetune_lr)
            tuner.train_all()
            pruned.eval()
            after = evaluate(pruned, test).accuracy
            lat = latency_pair(model, pruned, x1, args.repeats)
            rows.append(
                {
                    "criterion": criterion,
                    "macs_target": target,
                    "macs_kept": macs / dense_macs,
                    "params_kept": params / dense_params,
                    "accuracy_pruned": before,
                    "accuracy_finetuned": after,
                    "prune_seconds": prune_s,
                    "latency": lat,
                }
            )
            log(
                f"{criterion} MACs {target}: kept {macs / dense_macs:.3f}, acc {before:.4f} -> "
                f"{after:.4f}, speed-up b1 {lat[1]['speedup']:.2f} b64 {lat[64]['speedup']:.2f}"
            )
    result = {
        "args": vars(args),
        "dense": {"accuracy": dense_acc, "params": dense_params, "macs": dense_macs},
        "rows": rows,
        "seconds": time.perf_counter() - started,
    }
    report = markdown(result, argv)
    print(report)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(report)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return result


def markdown(result: dict, argv) -> str:
    args = result["args"]
    dense = result["dense"]
    command = "benchmarks/bench_structured.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    dense_b = {
        b: statistics.median(r["latency"][b]["dense_ms"] for r in result["rows"]) for b in (1, 64)
    }
    lines = [
        "# Structured pruning on Fashion-MNIST",
        "",
        f"`{args['model']}` (1 input channel), pre-trained {args['pretrain_epochs']:g} epochs "
        f"on {args['train_limit']} training images; each criterion prunes a copy with "
        f"`prune_to_macs` ({args['iterative_steps']} scoring step(s), "
        f"{args['score_samples']} scoring samples), then fine-tunes "
        f"{args['finetune_epochs']:g} epoch on {args['finetune_limit']} other images "
        f"(SGD, lr {args['finetune_lr']:g}, cosine). Accuracy on the first "
        f"{args['test_limit']} test images. Latency: median of {args['repeats']} CPU forward "
        f"passes with {args['threads']} thread(s); each pruned model is timed right after the "
        "dense one and the speed-up is their ratio.",
        "",
        f"Dense: accuracy {dense['accuracy']:.4f}, {dense['params']:,} parameters, "
        f"{dense['macs']:,} MACs per image, {dense_b[1]:.2f} ms at batch 1, "
        f"{dense_b[64]:.1f} ms at batch 64.",
        "",
        "| criterion | MACs target | MACs kept | params kept | acc. pruned | acc. fine-tuned "
        "| ms b1 | speed-up b1 | ms b64 | speed-up b64 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in sorted(result["rows"], key=lambda r: (-r["macs_target"], r["criterion"])):
        lat = r["latency"]
        lines.append(
            f"| {r['criterion']} | {r['macs_target']:g} | {r['macs_kept']:.3f} "
            f"| {r['params_kept']:.3f} | {r['accuracy_pruned']:.4f} "
            f"| {r['accuracy_finetuned']:.4f} | {lat[1]['pruned_ms']:.2f} "
            f"| {lat[1]['speedup']:.2f}x | {lat[64]['pruned_ms']:.1f} | {lat[64]['speedup']:.2f}x |"
        )
    lines += [
        "",
        f"Machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"total {result['seconds'] / 60:.1f} min.",
        "",
        f"Command: `.venv/bin/python {command}`",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
