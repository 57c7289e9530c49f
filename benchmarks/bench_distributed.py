"""Scale-out and memory: curvature with 1 and 2 processes, peak memory against chunk size.

Prints two Markdown tables (the README shows them):

1. `empirical_fisher_diag` and an FTS scoring pass over 256 CIFAR-sized samples, one process
   (1 and 2 threads) against two gloo processes of one thread each, on the same machine;
2. peak resident memory of `empirical_fisher_diag` on one batch of 128 against `chunk_size`,
   each in a fresh process, above its resident memory just before the call (Linux).

Run: ``.venv/bin/python benchmarks/bench_distributed.py``
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

sys.path.insert(0, os.path.dirname(__file__))
from bench_curvature import cifar_cnn  # noqa: E402

import curvprune as cp  # noqa: E402
from curvprune._core.memory import peak_memory_bytes  # noqa: E402


def _data(samples=256, batch=64):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(samples, 3, 32, 32, generator=gen)
    y = torch.randint(0, 10, (samples,), generator=gen)
    return [(x[i : i + batch], y[i : i + batch]) for i in range(0, samples, batch)]


def _passes(batches):
    torch.manual_seed(0)
    model = cifar_cnn(True).eval()
    out = {}
    t = time.perf_counter()
    cp.empirical_fisher_diag(model, None, batches)
    out["fisher"] = time.perf_counter() - t
    t = time.perf_counter()
    cp.score(model, "fts", batches)
    out["fts"] = time.perf_counter() - t
    return out


def _rank(rank, world, port, queue):
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world
    )
    batches = _data()[rank::world]
    dist.barrier()
    result = _passes(batches)
    dist.barrier()
    queue.put(result)
    dist.destroy_process_group()


def _two_processes():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    queue = ctx.SimpleQueue()
    mp.spawn(_rank, args=(2, port, queue), nprocs=2, join=True)
    results = [queue.get() for _ in range(2)]
    return {k: max(r[k] for r in results) for k in results[0]}


def _current_rss() -> int:
    """Resident bytes of this process now (Linux)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _memory_probe(chunk_size, queue):
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = cifar_cnn(True).eval()
    ((x, y),) = _data(128, 128)
    cp.empirical_fisher_diag(model, None, [(x[:2], y[:2])])  # load kernels, small allocations
    before = _current_rss()
    cp.empirical_fisher_diag(model, None, [(x, y)], chunk_size=chunk_size)
    queue.put(max(0, peak_memory_bytes() - before))


def _peak_for(chunk_size):
    ctx = mp.get_context("spawn")
    queue = ctx.SimpleQueue()
    p = ctx.Process(target=_memory_probe, args=(chunk_size, queue))
    p.start()
    p.join()
    return queue.get()


def main(argv=None) -> None:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args(argv)
    print("| setting | empirical_fisher_diag (s) | FTS scoring (s) |")
    print("|---|---|---|")
    rows = {}
    for threads in (1, 2):
        torch.set_num_threads(threads)
        rows[f"1 process, {threads} thread(s)"] = _passes(_data())
    rows["2 gloo processes, 1 thread each"] = _two_processes()
    for name, r in rows.items():
        print(f"| {name} | {r['fisher']:.2f} | {r['fts']:.2f} |")
    one = rows["1 process, 1 thread(s)"]
    two = rows["2 gloo processes, 1 thread each"]
    print(
        f"\nspeed-up of 2 processes over 1 (1 thread each): fisher "
        f"{one['fisher'] / two['fisher']:.2f}x, FTS {one['fts'] / two['fts']:.2f}x\n"
    )
    print("| chunk_size (samples per pass) | peak RSS above the idle process (MiB) |")
    print("|---|---|")
    for chunk in (8, 32, 128):
        print(f"| {chunk} | {_peak_for(chunk) / 2**20:.0f} |")


if __name__ == "__main__":
    main()
