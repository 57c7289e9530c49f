"""Two gloo processes on CPU: each estimator equals the single-process result over all data."""

import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from cases import CASES

import curvprune as cp

pytestmark = pytest.mark.slow  # spawns processes: a few seconds


def _estimates(model, batches):
    """Every estimator and a few criteria on `batches`, as a flat dict of tensors."""
    out = {}
    vec = {n: torch.full_like(p, 0.5) for n, p in model.named_parameters()}
    results = {
        "fisher": cp.empirical_fisher_diag(model, None, batches),
        "fisher2": cp.empirical_fisher_diag(model, None, batches, fisher_batch_size=2),
        "grad": cp.loss_gradient(model, None, batches),
        "hvp": cp.hessian_vector_product(model, None, batches, vec),
        "hutch": cp.hutchinson_diag(model, None, batches, num_probes=3, seed=2),
    }
    for crit, opts in [
        ("snip", {}),
        ("grasp", {}),
        ("fts", {}),
        ("hts", {"num_probes": 2}),
        ("oba", {}),
        ("woodfisher", {"block_size": 16, "dampening": 1e-3}),
        ("woodfisher", {"num_grads": 5, "dampening": 1e-3}),
    ]:
        results[f"{crit}{len(opts)}"] = cp.score(model, crit, batches, **opts)
    for key, d in results.items():
        for n, t in d.items():
            out[f"{key}/{n}"] = t
    masks = cp.prune(model, "fts", batches, sparsity=0.6).masks
    for n, m in masks.items():
        out[f"mask/{n}"] = m.to(torch.float64)
    return out


def _worker(rank, world, port, path):
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world
    )
    torch.set_num_threads(1)
    try:
        model, batches = CASES[0].build()  # mlp; batches of 5, 3 and 4 samples
        # unequal shares (8 and 4 samples), each a multiple of fisher_batch_size=2
        mine = batches[:2] if rank == 0 else batches[2:]
        torch.save(_estimates(model, mine), f"{path}.{rank}")
    finally:
        dist.destroy_process_group()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_gloo_ranks_match_one_process(tmp_path):
    path = str(tmp_path / "out")
    mp.spawn(_worker, args=(2, _free_port(), path), nprocs=2, join=True)
    model, batches = CASES[0].build()
    single = _estimates(model, batches)
    ranks = [torch.load(f"{path}.{r}", weights_only=True) for r in range(2)]
    for r, got in enumerate(ranks):
        assert set(got) == set(single)
        for k, want in single.items():
            if k.startswith(("hutch/", "hts1/")):
                # Hutchinson probes are drawn per (seed, rank, batch position), so ranks get the
                # same result as each other, not the single-process one
                want = ranks[0][k]
            torch.testing.assert_close(got[k], want, rtol=1e-6, atol=1e-9, msg=f"rank {r}: {k}")


def _bn_worker(rank, world, port, path):
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world
    )
    try:
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.BatchNorm1d(3)).double()
        gen = torch.Generator().manual_seed(1)
        batches = [
            (torch.randn(4, 3, generator=gen, dtype=torch.float64), torch.zeros(4))
            for _ in range(3)
        ]
        cp.bn_warmup(model, batches[:1] if rank == 0 else batches[1:])
        torch.save({"mean": model[0].running_mean, "var": model[0].running_var}, f"{path}.{rank}")
    finally:
        dist.destroy_process_group()


def test_bn_warmup_averages_over_all_ranks_batches(tmp_path):
    path = str(tmp_path / "bn")
    mp.spawn(_bn_worker, args=(2, _free_port(), path), nprocs=2, join=True)
    gen = torch.Generator().manual_seed(1)
    batches = [
        (torch.randn(4, 3, generator=gen, dtype=torch.float64), torch.zeros(4)) for _ in range(3)
    ]
    model = torch.nn.Sequential(torch.nn.BatchNorm1d(3)).double()
    cp.bn_warmup(model, batches)
    for r in range(2):
        got = torch.load(f"{path}.{r}", weights_only=True)
        torch.testing.assert_close(got["mean"], model[0].running_mean)
        torch.testing.assert_close(got["var"], model[0].running_var)
