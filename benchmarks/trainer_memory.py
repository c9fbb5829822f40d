"""A periodic trainer's memory across rounds, with and without giving freed heap back.

    OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/trainer_memory.py [--rounds 8]

Runs ``--rounds`` trainer rounds in one process on a growing synthetic stream (5,000 users,
history cap 50, 5,000 items, ALS k=8), once as the trainer did before (no trim) and once with
``batch.app.release_freed_memory`` after each round (glibc's ``malloc_trim``), each in a fresh
child process, and prints the RSS after every round. Asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def rounds(n: int, trim: bool) -> None:
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    sys.path.insert(0, str(ROOT))
    import psutil

    from recsys_stream.batch import app
    from recsys_stream.batch.data import from_events
    from recsys_stream.config import AlsConfig, Config, TenantConfig, TrainerConfig
    from recsys_stream.contracts.model_store import ModelStore
    from recsys_stream.synthetic import generate_events, make_world
    cfg = Config(model_store="unused", trainer=TrainerConfig(algorithms=("als",)),
                 tenants={"acme": TenantConfig(history_cap=50, als=AlsConfig(
                     factors=8, regularization=5.0, iterations=10))})
    tc = cfg.tenant("acme")
    events = generate_events(make_world("acme", 5000, genres=8), 5000, 60, 1_700_000_000_000,
                             seed=1)
    me = psutil.Process()
    out = [f"start {me.memory_info().rss >> 20}"]
    with tempfile.TemporaryDirectory() as d:
        store = ModelStore(d)
        for r in range(n):
            data = from_events("acme", events[: len(events) * (r + 3) // (n + 2)],
                               tc.confidence, tc.history_cap, 0.2)
            app.train_tenant(cfg, data, store, announcing="off")
            del data
            if trim:
                app.release_freed_memory()
            out.append(f"{me.memory_info().rss >> 20}")
    print(("with trim:    " if trim else "without trim: ") + " ".join(out) + " MB", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--child", choices=("trim", "keep"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        rounds(args.rounds, args.child == "trim")
        return 0
    print(f"RSS after each of {args.rounds} rounds (a fresh process each; load "
          f"{os.getloadavg()[0]:.2f} on {os.cpu_count()} cores):", flush=True)
    for mode in ("keep", "trim"):
        subprocess.run([sys.executable, __file__, "--rounds", str(args.rounds), "--child", mode],
                       check=True, stderr=subprocess.DEVNULL)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
