"""How well does Hutchinson rank weights? `hp` from k probes vs `hp` from the exact diag(H).

On a 64-32-10 ReLU MLP in float64 on scikit-learn's digits (no download), scored as the HTS code
scores: 10 training images per class (100 samples), batches of one sample (so M = 100 batches,
each with its own k probes: M·k probes in all), logits / 200 (hp's default temperature). For
k = 10, 30, 100, 300, 1000 probes per batch and 3 seeds it prints:

- Spearman rank correlation of hp (½θ²⊙D, D from k probes) with exact hp (½θ²⊙diag(H),
  diag(H) from the dense Hessian), over the prunable weights (both Linear weights), mean ± std;
- the fraction of exact hp's top 10% (the weights kept at 90% sparsity) that estimated hp keeps;
- the same two numbers for magnitude |θ|;
- the fraction of the Hessian's squared Frobenius norm on its diagonal, Σ H_ii² / Σ H_ij²,
  which sets the estimator's noise: Var(z⊙Hz)_i = Σ_{j≠i} H_ij².

At initialization (the pruning-at-initialization setting of the HTS paper) by default;
``--trained`` scores after 5 epochs of SGD on the training split instead, and ``--temperature 1``
scores the plain loss.

Run: ``PYTHONPATH=src .venv/bin/python benchmarks/hutchinson_quality.py --threads 1``
(about 2 minutes on one core).
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch
from scipy.stats import spearmanr
from sklearn.datasets import load_digits
from torch import nn
from torch.func import functional_call

import curvprune as cp
from curvprune._core.params import prunable_weights

PROBES = (10, 30, 100, 300, 1000)
SEEDS = (0, 1, 2)


def digits():
    x, y = load_digits(return_X_y=True)
    x = torch.tensor(x / 16.0, dtype=torch.float64)
    return x, torch.tensor(y)


def mlp(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10)).double()


def train(model: nn.Module, x, y, epochs: int = 5) -> None:
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    gen = torch.Generator().manual_seed(0)
    for _ in range(epochs):
        for idx in torch.randperm(len(x), generator=gen).split(32):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()


def scoring_batches(x, y, per_class: int = 10):
    """`per_class` samples of each class, one per batch (the HTS code's mask loader)."""
    gen = torch.Generator().manual_seed(123)
    idx = torch.cat(
        [
            torch.nonzero(y == c).flatten()[torch.randperm(int((y == c).sum()), generator=gen)][
                :per_class
            ]
            for c in range(10)
        ]
    )
    return [(x[i : i + 1], y[i : i + 1]) for i in idx.tolist()]


def dense_hessian(model, batches, temperature):
    """H of L = mean CE(logits / T) over the scoring samples, P×P over all parameters."""
    xs = torch.cat([b[0] for b in batches])
    ys = torch.cat([b[1] for b in batches])
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]
    sizes = [p.numel() for p in model.parameters()]

    def loss(vec):
        params = {n: t.reshape(s) for n, t, s in zip(names, vec.split(sizes), shapes)}
        out = functional_call(model, params, (xs,))
        return nn.functional.cross_entropy(out / temperature, ys)

    theta = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    h = torch.autograd.functional.hessian(loss, theta, vectorize=True)
    return h, dict(zip(names, zip(np.cumsum([0, *sizes[:-1]]).tolist(), sizes, strict=True)))


def flat(scores: dict, names) -> np.ndarray:
    return torch.cat([scores[n].reshape(-1) for n in names]).numpy()


def top_overlap(est: np.ndarray, exact: np.ndarray, keep: float = 0.1) -> float:
    k = max(1, int(keep * len(exact)))
    return len(set(np.argsort(-est)[:k]) & set(np.argsort(-exact)[:k])) / k


def measure(model, batches, temperature) -> dict:
    h, offsets = dense_hessian(model, batches, temperature)
    weights = prunable_weights(model)
    names = list(weights)
    diag = h.diagonal()
    theta = {n: w.value() for n, w in weights.items()}
    exact = {
        n: 0.5 * t * t * diag[offsets[n][0] : offsets[n][0] + offsets[n][1]].reshape(t.shape)
        for n, t in theta.items()
    }
    exact_flat = flat(exact, names)
    mag = flat({n: t.abs() for n, t in theta.items()}, names)
    rows = {}
    for k in PROBES:
        rho, top = [], []
        for seed in SEEDS:
            hp = cp.score(model, "hp", batches, num_probes=k, seed=seed, temperature=temperature)
            est = flat(hp, names)
            rho.append(spearmanr(est, exact_flat).statistic)
            top.append(top_overlap(est, exact_flat))
        rows[k] = (np.mean(rho), np.std(rho), np.mean(top), np.std(top))
    return {
        "rows": rows,
        "magnitude": (spearmanr(mag, exact_flat).statistic, top_overlap(mag, exact_flat)),
        "diag_mass": float((diag**2).sum() / (h**2).sum()),
        "batches": len(batches),
    }


def table(label: str, m: dict) -> str:
    lines = [
        f"**{label}**: M = {m['batches']} batches of 1 sample; the diagonal holds a fraction "
        f"{m['diag_mass']:.2g} of ‖H‖²_F",
        "",
        "| probes per batch k | probes in all M·k | Spearman ρ vs exact hp | top-10% kept agree |",
        "|---:|---:|---:|---:|",
    ]
    for k, (r, rs, t, ts) in m["rows"].items():
        lines.append(f"| {k} | {k * m['batches']} | {r:.3f} ± {rs:.3f} | {t:.3f} ± {ts:.3f} |")
    r, t = m["magnitude"]
    lines.append(f"| magnitude \\|θ\\| | – | {r:.3f} | {t:.3f} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    parser.add_argument("--trained", action="store_true", help="score after 5 epochs of SGD")
    parser.add_argument("--temperature", type=float, default=200.0, help="hp's T (default 200)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    start = time.perf_counter()
    x, y = digits()
    n_train = 1437
    batches = scoring_batches(x[:n_train], y[:n_train])
    model = mlp(0)
    label = "At initialization"
    if args.trained:
        train(model, x[:n_train], y[:n_train])
        with torch.no_grad():
            acc = (model(x[n_train:]).argmax(1) == y[n_train:]).double().mean().item()
        label = f"After 5 epochs (test accuracy {100 * acc:.1f}%)"
    label += f", T = {args.temperature:g}"
    print(table(label, measure(model, batches, args.temperature)))
    print(
        f"\nMean ± std over seeds {', '.join(map(str, SEEDS))}; "
        f"{sum(p.numel() for p in model.parameters())} parameters, "
        f"{sum(w.value().numel() for w in prunable_weights(model).values())} prunable; "
        f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), "
        f"{time.perf_counter() - start:.0f} s."
    )
    print(f"Command: PYTHONPATH=src python {' '.join(sys.argv)}")


if __name__ == "__main__":
    main()
