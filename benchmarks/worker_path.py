"""The worker's per-user path in-process, over pre-filled histories, in small paced-like batches.

    OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/worker_path.py [--history 50]
        [--batch 25] [--commit-every 20] [--events 20000] [--profile]

``benchmarks/worker_cost.py`` without the broker: users (as many as worker_cost's group for the
history length) are pre-filled to ``--history`` items through ``Worker.process`` (not measured),
then ``--events`` events (half repeat an item of the user's history, half bring a new one) run
through ``Worker.process`` in batches of ``--batch`` with a commit per ``--commit-every`` batches,
a real RocksDB and a recording producer (``hot_path.DigestProducer``). Prints this process's CPU
per event; ``--profile`` adds cProfile's top functions. Run at two commits (``PYTHONPATH``) to
compare; on a shared machine alternate them.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import tempfile
import time
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._common import TENANT, encode_interaction, load_note, publish_model  # noqa: E402
from benchmarks.hot_path import DigestProducer, Record, StaticModels  # noqa: E402

import numpy as np  # noqa: E402

from recsys_stream.contracts.model_store import ModelStore  # noqa: E402
from recsys_stream.nearline.app import tune_gc  # noqa: E402
from recsys_stream.nearline.models import FoldInModel  # noqa: E402
from recsys_stream.nearline.state import StateStore  # noqa: E402
from recsys_stream.nearline.worker import Worker  # noqa: E402
from recsys_stream.stack import load, write_config  # noqa: E402
from recsys_stream.synthetic import _TYPES, make_world  # noqa: E402

_USERS = {10: 10_000, 50: 4_000, 500: 600}  # as benchmarks/worker_cost.py's groups


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--history", type=int, default=50)
    ap.add_argument("--batch", type=int, default=25)
    ap.add_argument("--commit-every", type=int, default=20)
    ap.add_argument("--events", type=int, default=20_000)
    ap.add_argument("--items", type=int, default=50_000)
    ap.add_argument("--factors", type=int, default=64)
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()
    H, n_items = args.history, args.items
    n_users = _USERS.get(H, max(600, 300_000 // H))
    with tempfile.TemporaryDirectory() as tmp:
        wd = Path(tmp)
        cfg = load(write_config(wd / "c.toml", "127.0.0.1:9", wd, "127.0.0.1:1",
                                keys={TENANT: "k"}))
        publish_model(cfg, n_items, args.factors)
        model = FoldInModel.from_artifacts(ModelStore(cfg.model_store).load(TENANT, "als"),
                                           cfg.worker.normal_cache_users)
        ids = make_world(TENANT, n_items).item_ids
        now = int(time.time() * 1000)
        parts = cfg.kafka.interaction_partitions

        def record(j, user, item, type_name, ts):
            k, v = encode_interaction(j, user, ids[item], type_name, ts)
            return Record(k, v, zlib.crc32(k) % parts, j, ts)
        prefill = [record(j, u, it, "view", now - 3_600_000 + j) for j, (u, it) in enumerate(
            (u, it) for u in range(n_users) for it in (u * 7919 + np.arange(H) * 13) % n_items)]
        store, prod = StateStore(wd / "state", cfg.worker.state_cache_items), DigestProducer()
        worker = Worker(cfg, store, StaticModels(model), None, prod)
        tune_gc()
        for i in range(0, len(prefill), 20_000):
            worker.process(prefill[i:i + 20_000])
            worker.commit()
        rng = np.random.default_rng(1)
        n, j0 = args.events, len(prefill)
        users = rng.integers(0, n_users, n)
        own = (users * 7919 + rng.integers(0, H, n) * 13) % n_items
        items = np.where(rng.random(n) < 0.5, own, rng.integers(0, n_items, n))
        types = rng.choice(_TYPES, n)
        paced = [record(j0 + i, int(users[i]), items[i], types[i], now + i) for i in range(n)]

        def run():
            for b, i in enumerate(range(0, n, args.batch), 1):
                worker.process(paced[i:i + args.batch])
                if b % args.commit_every == 0:
                    worker.commit()
            worker.commit()
        prof = cProfile.Profile() if args.profile else None
        c0 = time.process_time()
        if prof:
            prof.runcall(run)
        else:
            run()
        cpu = time.process_time() - c0
        store.close()
    print(f"history {H}, {n_users} users, {n} events in batches of {args.batch}, a commit per "
          f"{args.commit_every}: {1e6 * cpu / n:.1f} us CPU per event ({load_note()})")
    if prof:
        pstats.Stats(prof).sort_stats("cumulative").print_stats(40)


if __name__ == "__main__":
    main()
