"""curvprune against BackPACK and curvlinops, side by side in one process.

The two curvature quantities a user could otherwise get from a peer library:

- the empirical Fisher diagonal, (1/N) Σ_n g_n ⊙ g_n over per-sample gradients g_n:
  `curvprune.empirical_fisher_diag` (fisher_batch_size=1) against BackPACK's `SumGradSquared`.
  With the loss's mean reduction BackPACK differentiates (1/N)·ℓ_n, so its Σ_n (g_n/N)² is
  multiplied by N;
- the exact Hessian-vector product H·v of the batch-mean loss: `curvprune.hessian_vector_product`
  against curvlinops' `HessianLinearOperator` matvec (the operator is built once, outside the
  timing, as a user would).

Before any timing, both pairs are checked against each other on the benchmark's own model and
batch, in float64 (elementwise, rtol 1e-4) and in float32, the precision that is timed (the
Fisher elementwise to rtol 1e-4; the HVP per tensor to a relative norm error of 1e-4, because
in float32 its small entries are sums with cancellation that two correct orders of summation
round differently). A failed check stops the script with a nonzero exit.

Timing: every round runs each method once (the order rotates from round to round), after one
warm-up round; the table reports the median over rounds of each method's time divided by the
same round's plain forward+backward time, so every ratio is taken under the same background
load. BackPACK times a model copy it has extended (same weights); its hooks never touch the
model the others use.

Run: ``python benchmarks/bench_peers.py [--repeats 30] [--threads 1 2]
[--md docs/claims/peers.md --csv docs/claims/peers.csv]``
Needs the peer libraries: ``pip install 'curvprune[bench]'``.
"""

from __future__ import annotations

import argparse
import copy
import csv
import importlib.metadata
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

import curvprune as cp
from curvprune.models import build_model

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_curvature import cifar_cnn  # noqa: E402  (the same CNN as the curvature benchmark)

PEERS = {"backpack": "backpack-for-pytorch", "curvlinops": "curvlinops-for-pytorch"}
INSTALL_HINT = "pip install 'curvprune[bench]'"

# name -> (model factory, input shape of one sample)
MODELS: dict[str, tuple[Callable[[], nn.Module], tuple[int, ...]]] = {
    "cnn": (lambda: cifar_cnn(False), (3, 32, 32)),
    "cnn-bn": (lambda: cifar_cnn(True), (3, 32, 32)),
    "lenet300": (
        lambda: build_model("lenet300", in_channels=1, num_classes=10, image_size=28),
        (1, 28, 28),
    ),
}

# (key, label): the order of the table's rows
METHODS = [
    ("base", "forward+backward (reference)"),
    ("ef", "curvprune `empirical_fisher_diag`"),
    ("backpack", "BackPACK `SumGradSquared` (×N)"),
    ("hvp", "curvprune `hessian_vector_product`"),
    ("curvlinops", "curvlinops `HessianLinearOperator @ v`"),
]


def missing_peers() -> list[str]:
    """Distribution names of the peer libraries that cannot be imported."""
    missing = []
    for module, dist in PEERS.items():
        try:
            __import__(module)
        except ImportError:
            missing.append(dist)
    return missing


def require_peers() -> None:
    missing = missing_peers()
    if missing:
        sys.exit(
            f"bench_peers.py needs {', '.join(missing)}, which cannot be imported.\n"
            f"Install the benchmark extra: {INSTALL_HINT}"
        )


def _quiet_backpack():
    # BackPACK's full backward hooks warn on every call when the input needs no gradient
    warnings.filterwarnings("ignore", message="Full backward hook is firing")
    warnings.filterwarnings("ignore", message=".*torch.jit.script.*deprecated")


def forward_backward(model: nn.Module, x, y) -> None:
    model.zero_grad(set_to_none=True)
    nn.functional.cross_entropy(model(x), y).backward()
    model.zero_grad(set_to_none=True)


class Peers:
    """The four curvature methods (and the reference pass) on one model and batch.

    Args:
        model: the network (put in eval mode here); BackPACK gets an extended deep copy.
        x: inputs, shape (N, ...).
        y: class targets, shape (N,).
        seed: seed of the random vector v of the HVPs.
    """

    def __init__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, seed: int = 0):
        from backpack import extend
        from curvlinops import HessianLinearOperator

        _quiet_backpack()
        self.model = model.eval()
        self.x, self.y = x, y
        self.batches = [(x, y)]
        self.names = [n for n, p in model.named_parameters() if p.requires_grad]
        params = dict(model.named_parameters())
        gen = torch.Generator().manual_seed(seed)
        self.vec = {
            n: torch.randn(params[n].shape, generator=gen, dtype=params[n].dtype)
            for n in self.names
        }
        self.bp_model = extend(copy.deepcopy(model).eval())
        self.bp_loss = extend(nn.CrossEntropyLoss())
        self.hessian = HessianLinearOperator(
            model, nn.CrossEntropyLoss(), [params[n] for n in self.names], self.batches
        )

    def base(self) -> None:
        forward_backward(self.model, self.x, self.y)

    def ef(self) -> dict[str, torch.Tensor]:
        return cp.empirical_fisher_diag(self.model, None, self.batches, fisher_batch_size=1)

    def backpack(self) -> dict[str, torch.Tensor]:
        from backpack import backpack
        from backpack.extensions import SumGradSquared

        model = self.bp_model
        model.zero_grad(set_to_none=True)
        loss = self.bp_loss(model(self.x), self.y)
        with backpack(SumGradSquared()):
            loss.backward()
        n = self.x.shape[0]
        out = {}
        for name, p in model.named_parameters():
            if p.requires_grad:
                out[name] = p.sum_grad_squared * n
                del p.sum_grad_squared
        model.zero_grad(set_to_none=True)
        return out

    def hvp(self) -> dict[str, torch.Tensor]:
        return cp.hessian_vector_product(self.model, None, self.batches, self.vec)

    def curvlinops(self) -> dict[str, torch.Tensor]:
        hv = self.hessian @ [self.vec[n] for n in self.names]
        return dict(zip(self.names, hv))


def _elementwise_error(ours: dict, ref: dict, floor: float) -> float:
    """max |a − b| / max(|b|, floor·max|b|) over all entries of all tensors."""
    worst = 0.0
    for n, b in ref.items():
        a = ours[n]
        denom = b.abs().clamp_min(floor * b.abs().max().clamp_min(1e-300))
        worst = max(worst, ((a - b).abs() / denom).max().item())
    return worst


def _norm_error(ours: dict, ref: dict) -> float:
    """max over tensors of ‖a − b‖ / ‖b‖."""
    return max(((ours[n] - b).norm() / b.norm().clamp_min(1e-300)).item() for n, b in ref.items())


def check(peers: Peers, rtol: float = 1e-4) -> list[tuple[str, float, float, bool]]:
    """Compare curvprune with the peers on `peers`' model and batch, and in a float64 copy.

    The elementwise error divides by max(|b|, 1e-6·max|b|) in float32 (1e-12 in float64), so
    that entries which are exactly zero in both (say a dead unit's) do not divide by zero.

    Returns:
        rows (comparison, error, tolerance, passed).
    """
    rows = []
    p64 = Peers(copy.deepcopy(peers.model).double(), peers.x.double(), peers.y)
    p64.vec = {n: v.double() for n, v in peers.vec.items()}
    for tag, p, floor in (("float64", p64, 1e-12), ("float32", peers, 1e-6)):
        for name, (ours, ref) in {
            "EF vs BackPACK, elementwise": (p.ef(), p.backpack()),
            "HVP vs curvlinops, elementwise": (p.hvp(), p.curvlinops()),
        }.items():
            if tag == "float32" and name.startswith("HVP"):
                name = "HVP vs curvlinops, per-tensor norm"
                err = _norm_error(ours, ref)
            else:
                err = _elementwise_error(ours, ref, floor)
            if set(ours) != set(ref):
                err = float("inf")
            rows.append((f"{name} ({tag})", err, rtol, err <= rtol))
    return rows


def time_rounds(fns: dict[str, Callable], repeats: int) -> dict[str, list[float]]:
    """Seconds per call of each function, one call of each per round, after a warm-up round.

    The start of the order rotates each round, so no method always follows the same one.
    """
    keys = list(fns)
    times = {k: [] for k in keys}
    for r in range(repeats + 1):
        shift = r % len(keys)
        for k in keys[shift:] + keys[:shift]:
            t = time.perf_counter()
            fns[k]()
            elapsed = time.perf_counter() - t
            if r:
                times[k].append(elapsed)
    return times


def load_average() -> str:
    try:
        out = subprocess.run(["uptime"], capture_output=True, text=True, check=True).stdout
        return out.strip().split("load average:")[-1].strip()
    except (OSError, subprocess.CalledProcessError):
        return ", ".join(f"{v:.2f}" for v in os.getloadavg())


def _quantile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=4, method="inclusive")[{0.25: 0, 0.75: 2}[q]]


def summarize(times: dict[str, list[float]]) -> list[tuple[str, float, float, float, float]]:
    """Rows (key, median ratio, quartile 1, quartile 3, median ms) from per-round times."""
    base = times["base"]
    rows = []
    for key, _ in METHODS:
        ratios = [t / b for t, b in zip(times[key], base)]
        rows.append(
            (
                key,
                statistics.median(ratios),
                _quantile(ratios, 0.25),
                _quantile(ratios, 0.75),
                statistics.median(times[key]) * 1e3,
            )
        )
    return rows


def head_to_head(times: dict[str, list[float]]) -> dict[str, float]:
    """Median over rounds of peer time / curvprune time (> 1: curvprune is faster)."""
    return {
        "BackPACK / curvprune EF": statistics.median(
            [b / a for a, b in zip(times["ef"], times["backpack"])]
        ),
        "curvlinops / curvprune HVP": statistics.median(
            [b / a for a, b in zip(times["hvp"], times["curvlinops"])]
        ),
    }


def make_peers(model_name: str, batch_size: int, seed: int = 0) -> Peers:
    factory, shape = MODELS[model_name]
    torch.manual_seed(seed)
    model = factory()
    x = torch.randn(batch_size, *shape)
    y = torch.randint(0, 10, (batch_size,))
    return Peers(model, x, y, seed=seed)


def versions() -> str:
    libs = [f"curvprune {cp.__version__}", f"torch {torch.__version__}"]
    for dist in PEERS.values():
        try:
            libs.append(f"{dist} {importlib.metadata.version(dist)}")
        except importlib.metadata.PackageNotFoundError:
            libs.append(f"{dist} (not installed)")
    return ", ".join(libs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30, help="timed rounds per setting")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument(
        "--models", nargs="+", default=["cnn", "cnn-bn", "lenet300"], choices=list(MODELS)
    )
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--md", type=Path, help="also write the report (Markdown) here")
    parser.add_argument("--csv", type=Path, help="also write the per-round timings here")
    args = parser.parse_args(argv)
    if args.repeats < 2:
        parser.error(f"--repeats must be at least 2 for quartiles, got {args.repeats}")
    require_peers()

    given = sys.argv[1:] if argv is None else argv
    command = " ".join(["python benchmarks/bench_peers.py", shlex.join(given)]).strip()
    lines: list[str] = []

    def out(s: str = "") -> None:
        print(s, flush=True)
        lines.append(s)

    cpu = platform.processor() or platform.machine()
    out("# curvprune against BackPACK and curvlinops, side by side")
    out()
    out(f"Command: `{command}`")
    out()
    out(
        f"{versions()}; {cpu}, {os.cpu_count()} CPUs visible, float32, CPU, batch "
        f"{args.batch_size}, {args.repeats} timed rounds after one warm-up round."
    )
    out()
    out(
        f"Load average (1, 5, 15 min) at start: {load_average()} "
        f"({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})"
    )
    out()

    # correctness first, at one thread, on every model: nothing is timed unless all pass
    torch.set_num_threads(1)
    out("## Correctness (before timing)")
    out()
    out("| model | comparison | error | tolerance | passed |")
    out("|---|---|---|---|---|")
    failed = False
    models = {name: make_peers(name, args.batch_size) for name in args.models}
    for name, peers in models.items():
        for label, err, tol, ok in check(peers):
            out(f"| {name} | {label} | {err:.1e} | {tol:.0e} | {'yes' if ok else 'NO'} |")
            failed |= not ok
    out()
    if failed:
        out("**Correctness check FAILED: the methods disagree; no timings taken.**")
        if args.md:
            args.md.write_text("\n".join(lines) + "\n")
        print("bench_peers.py: correctness check failed", file=sys.stderr)
        return 1

    raw = []
    for threads in args.threads:
        torch.set_num_threads(threads)
        out(f"## {threads} thread{'s' if threads > 1 else ''}")
        out()
        out(f"Load average before: {load_average()}")
        out()
        for name, peers in models.items():
            times = time_rounds({k: getattr(peers, k) for k, _ in METHODS}, args.repeats)
            for key, ts in times.items():
                raw += [(name, threads, r + 1, key, t * 1e3) for r, t in enumerate(ts)]
            labels = dict(METHODS)
            out(f"### {name}, {threads} thread{'s' if threads > 1 else ''}")
            out()
            out("| method | ratio to fwd+bwd (median) | quartiles of the ratio | ms (median) |")
            out("|---|---|---|---|")
            for key, med, q1, q3, ms in summarize(times):
                out(f"| {labels[key]} | {med:.2f} | {q1:.2f}–{q3:.2f} | {ms:.1f} |")
            out()
            h2h = head_to_head(times)
            out(
                "Head to head, median over rounds of the per-round ratio (> 1: curvprune "
                "faster): " + "; ".join(f"{k} = {v:.2f}" for k, v in h2h.items()) + "."
            )
            out()
        out(f"Load average after: {load_average()}")
        out()

    if args.md:
        args.md.parent.mkdir(parents=True, exist_ok=True)
        args.md.write_text("\n".join(lines) + "\n")
    if args.csv:
        args.csv.parent.mkdir(parents=True, exist_ok=True)
        with args.csv.open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["model", "threads", "round", "method", "ms"])
            w.writerows((m, th, r, k, f"{ms:.3f}") for m, th, r, k, ms in raw)
    return 0


if __name__ == "__main__":
    sys.exit(main())
