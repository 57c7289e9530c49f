"""Start-up cost of the command line against a bare ``import torch``.

Runs ``python -c "import torch"``, ``curvprune list`` and ``curvprune --help`` in interleaved
rounds (A, B, C, A, B, C, ...) and prints the median of the per-round ratios, so that load from
other processes hits all three alike.

    .venv/bin/python benchmarks/bench_startup.py --rounds 7
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

COMMANDS = {
    "import torch": [sys.executable, "-c", "import torch"],
    "curvprune list": [sys.executable, "-m", "curvprune", "list"],
    "curvprune --help": [sys.executable, "-m", "curvprune", "--help"],
}


def _seconds(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    times: dict[str, list[float]] = {k: [] for k in COMMANDS}
    for _ in range(args.rounds):
        for name, cmd in COMMANDS.items():
            times[name].append(_seconds(cmd))
    base = times["import torch"]
    print("| command | median s | median ratio to import torch |")
    print("|---|---|---|")
    for name, ts in times.items():
        ratio = statistics.median(t / b for t, b in zip(ts, base))
        print(f"| `{name}` | {statistics.median(ts):.2f} | {ratio:.2f} |")
    print(f"\n{args.rounds} interleaved rounds; command: python benchmarks/bench_startup.py")


if __name__ == "__main__":
    main()
