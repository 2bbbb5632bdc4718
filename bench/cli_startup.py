"""How long `configsync --help` (and `configsync run --help`) take to start, against a bare
Python interpreter started the same way, in the same run (target: --help under 0.3 s).

Usage: python -m bench.cli_startup [--runs 20]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path


def _median_seconds(command: list[str], runs: int) -> float:
    timings = []
    for _ in range(runs):
        began = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        timings.append(time.perf_counter() - began)
    return sorted(timings)[runs // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    exe = str(Path(sys.executable).with_name("configsync"))
    bare = _median_seconds([sys.executable, "-c", "pass"], args.runs)
    print(f"python -c pass:          {bare * 1000:7.1f} ms (median of {args.runs})")
    for label, command in (
        ("configsync --help", [exe, "--help"]),
        ("configsync run --help", [exe, "run", "--help"]),
        ("configsync --version", [exe, "--version"]),
    ):
        took = _median_seconds(command, args.runs)
        verdict = "under" if took < 0.3 else "OVER"
        print(
            f"{label:24s} {took * 1000:7.1f} ms ({took / bare:.1f}x bare python; {verdict} 0.3 s)"
        )


if __name__ == "__main__":
    main()
