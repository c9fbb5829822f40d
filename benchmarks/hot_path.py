"""The worker's hot path alone (``Worker.process``), without a broker: CPU rate and output digest.

    OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/hot_path.py [--events 100000]
        [--users 10000] [--items 50000] [--factors 64] [--batch <config's>]

``Worker.process`` runs over in-memory records (the ingest benchmark's Zipf events) with a real
RocksDB state store, a published ALS model, a recording producer and a fixed clock. Prints the
rate per wall second and per CPU second of this process (the CPU figure moves little when the
machine is shared), and a sha256 of everything published, with and without the fold-in
vectors: two versions of the hot path that print the same digests behave the same. The worker
commits after every ``--commit-every`` batches (a running worker commits on a timer). Records
are hashed per topic, in the order produced to that topic.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import tempfile
import time
import zlib
from collections import defaultdict
from pathlib import Path
from unittest import mock

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._common import TENANT, load_note, publish_model, zipf_records  # noqa: E402

from recsys_stream.contracts.model_store import ModelStore  # noqa: E402
from recsys_stream.contracts.pb import profiles_pb2  # noqa: E402
from recsys_stream.nearline.app import tune_gc  # noqa: E402
from recsys_stream.nearline.models import FoldInModel  # noqa: E402
from recsys_stream.nearline.state import StateStore  # noqa: E402
from recsys_stream.nearline.worker import Worker  # noqa: E402
from recsys_stream.stack import load, write_config  # noqa: E402

_NOW_S = 1_795_000_000.0


class Record:
    """What ``Worker.process`` reads of a consumed message."""

    __slots__ = ("_key", "_value", "_partition", "_offset", "_ts")

    def __init__(self, key: bytes, value: bytes, partition: int, offset: int, ts: int) -> None:
        self._key, self._value, self._partition, self._offset, self._ts = \
            key, value, partition, offset, ts

    def topic(self): return "interactions"
    def partition(self): return self._partition
    def offset(self): return self._offset
    def key(self): return self._key
    def value(self): return self._value
    def timestamp(self): return (1, self._ts)
    def error(self): return None
    def headers(self): return None


class DigestProducer:
    """Hashes every record produced, per topic; profiles also without their vectors."""

    def __init__(self) -> None:
        self.all, self.sans_vectors = defaultdict(hashlib.sha256), defaultdict(hashlib.sha256)
        self.n = 0

    def produce(self, topic, key=None, value=None, partition=-1, headers=None,
                on_delivery=None) -> None:
        self.n += 1
        self.all[topic].update(key + value)
        if topic.endswith("profiles"):
            p = profiles_pb2.UserProfile.FromString(value)
            del p.vectors[:]
            value = p.SerializeToString()
        self.sans_vectors[topic].update(key + value)
        if on_delivery is not None:  # acknowledged at once
            on_delivery(None, None)

    @staticmethod
    def digest(hashes: dict) -> str:
        return hashlib.sha256(b"".join(
            t.encode() + hashes[t].digest() for t in sorted(hashes))).hexdigest()[:16]

    def flush(self, *_) -> int:
        return 0

    def poll(self, *_) -> int:
        return 0


class StaticModels:
    def __init__(self, model: FoldInModel) -> None:
        self.model = model

    def models(self, tenant: str) -> dict[str, FoldInModel]:
        return {"als": self.model} if tenant == TENANT else {}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--users", type=int, default=10_000)
    ap.add_argument("--items", type=int, default=50_000)
    ap.add_argument("--factors", type=int, default=64)
    ap.add_argument("--batch", type=int, default=0, help="events per batch (0: the config's)")
    ap.add_argument("--commit-every", type=int, default=1, help="batches per commit")
    ap.add_argument("--span-s", type=float, default=3600,
                    help="the events' timestamps spread over this many seconds")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        wd = Path(tmp)
        cfg = load(write_config(wd / "c.toml", "127.0.0.1:9", wd, "127.0.0.1:1",
                                keys={TENANT: "k"}))
        publish_model(cfg, args.items, args.factors)
        model = FoldInModel.from_artifacts(ModelStore(cfg.model_store).load(TENANT, "als"),
                                           cfg.worker.normal_cache_users)
        now_ms = int(_NOW_S * 1000)
        records = [Record(k, v, zlib.crc32(k) % cfg.kafka.interaction_partitions, j, ts)
                   for j, (k, v, ts) in enumerate(zipf_records(
                       args.events, args.users, args.items, now_ms=now_ms,
                       span_ms=int(args.span_s * 1000)))]
        store, prod = StateStore(wd / "state", cfg.worker.state_cache_items), DigestProducer()
        worker = Worker(cfg, store, StaticModels(model), None, prod)
        batch = args.batch or cfg.worker.batch_max_events
        tune_gc()  # as the worker process does
        with mock.patch("time.time", return_value=_NOW_S):  # published times are fixed
            t0, c0 = time.perf_counter(), time.process_time()
            for j, i in enumerate(range(0, len(records), batch), 1):
                worker.process(records[i:i + batch])
                if j % args.commit_every == 0:
                    worker.commit()
            worker.commit()
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        store.close()
    print(f"Worker.process: {args.events} events of {args.users} users (Zipf 1.0) in batches of "
          f"{batch}, a commit per {args.commit_every}: {args.events / wall:,.0f} events/s wall, {args.events / cpu:,.0f} events per "
          f"CPU second ({load_note()})")
    print(f"published {prod.n} records; sha256 {prod.digest(prod.all)}, without fold-in "
          f"vectors {prod.digest(prod.sans_vectors)}")


if __name__ == "__main__":
    main()
