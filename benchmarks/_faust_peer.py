"""The Faust peer of the ingest benchmark: the worker's aggregation and fold-in as a Faust agent.

    .venv/bin/python -m benchmarks._faust_peer CONFIG EVENTS RESULT_JSON

Run by ``benchmarks/ingest.py`` as its own process. It consumes the same pre-produced
interactions (its own consumer group), keeps each user's ``UserHistory`` bytes in a Faust table
(in memory, with its changelog topic, as Faust does), applies events with the same offset and
duplicate rules, folds in every touched user of a batch with the same vectorised
fold-in (``FoldInModel.foldin``, as the worker calls it) and sends the same ``UserProfile`` records to a topic of its own. Batches come
from ``take_events`` with the worker's batch size and timeout, so both solve the same batches.

Writes RESULT_JSON (Faust takes over stdout): seconds from process start to the first batch done and to all ``EVENTS``
applied and every send acknowledged.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections import defaultdict
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
T_START = time.time()

import faust  # noqa: E402

from recsys_stream.contracts.events import InvalidEvent, decode_event  # noqa: E402
from recsys_stream.contracts.model_store import ModelStore  # noqa: E402
from recsys_stream.contracts.pb import profiles_pb2  # noqa: E402
from recsys_stream.contracts.user_state import UserHistory  # noqa: E402
from recsys_stream.nearline.app import tune_gc  # noqa: E402
from recsys_stream.nearline.models import FoldInModel  # noqa: E402
from recsys_stream.stack import load  # noqa: E402

TENANT = "bench"


class InputPartitionedTable(faust.Table):
    """A table whose changelog partition is the input partition of the key's events.

    That is Faust's own rule for a write in an agent (the current event's partition); a batch
    from ``take_events`` holds keys of several partitions, so the rule is applied per key.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.partition_of: dict[bytes, int] = {}

    def partition_for_key(self, key: bytes) -> int:
        return self.partition_of[key]


def build_app(config_path: str, n_events: int, out_path: str) -> faust.App:
    cfg = load(config_path)
    wc = cfg.worker
    model = FoldInModel.from_artifacts(ModelStore(cfg.model_store).load(TENANT, "als"),
                                       wc.normal_cache_users)
    app = faust.App(
        f"{cfg.kafka.topic_prefix}faust-peer", broker=f"kafka://{cfg.kafka.bootstrap_servers}",
        store="memory://", web_enabled=False, topic_partitions=cfg.kafka.interaction_partitions,
        consumer_auto_offset_reset="earliest", key_serializer="raw", value_serializer="raw",
        # the same batching and producer latency budget the worker has
        broker_max_poll_records=wc.batch_max_events, stream_buffer_maxsize=4 * wc.batch_max_events,
        producer_linger_ms=5, producer_max_batch_size=1_000_000)
    source = app.topic(cfg.topics.interactions, key_type=bytes, value_type=bytes)
    sink = app.topic(f"{cfg.kafka.topic_prefix}faust-profiles", key_type=bytes,
                     value_type=bytes, partitions=cfg.kafka.interaction_partitions)
    table = app.tables.add(InputPartitionedTable(
        app, name="users", key_type=bytes, value_type=bytes,
        partitions=cfg.kafka.interaction_partitions))
    tenants = frozenset(cfg.tenants)
    settings, cap = model.confidence, cfg.tenants[TENANT].history_cap
    done = {"events": 0, "first": None}

    @app.agent(source)
    async def aggregate(stream):
        async for events in stream.take_events(wc.batch_max_events,
                                               within=wc.batch_timeout_ms / 1000):
            now = int(time.time() * 1000)
            table.partition_of = {}
            by_user = defaultdict(list)
            for e in events:
                try:
                    ev = decode_event(e.key, e.value, tenants, now, wc.max_future_ms,
                                      wc.max_past_ms)
                except InvalidEvent:
                    continue
                by_user[ev.key].append((ev, e.message.partition, e.message.offset))
            touched = {}
            for key, items in by_user.items():
                raw = table.get(key)
                h = UserHistory.decode(raw) if raw else UserHistory(TENANT, items[0][0].user_id)
                for ev, partition, offset in items:
                    if offset <= h.applied_offset and partition == h.input_partition:
                        continue
                    h.apply(ev.event_id, ev.item_id, ev.type, ev.value, ev.timestamp_ms,
                            settings, cap)
                    h.applied_offset, h.input_partition = offset, partition
                touched[key] = h
                table.partition_of[key] = items[-1][1]
            conf = {key: h.confidences(settings) for key, h in touched.items()}
            solved, X, rows = model.foldin.solve(list(conf), list(conf.values()))  # the worker's
            vectors = dict(zip(solved, zip(X, rows)))
            upd = int(time.time() * 1000)
            for key, h in touched.items():
                ids, c = conf[key]
                p = profiles_pb2.UserProfile(
                    tenant=h.tenant, user_id=h.user_id, item_ids=ids, confidences=c.tolist(),
                    suppressed_item_ids=list(h.suppressed), last_event_ms=h.last_event_ms,
                    updated_ms=upd)
                if key in vectors:
                    x, seen = vectors[key]
                    hidden = [r for r in map(model.item_row.get, h.suppressed) if r is not None]
                    p.vectors.add(algorithm="als", model_version=model.version,
                                  values=x.tolist(), suppressed_rows=seen.tolist() + hidden)
                await sink.send(key=key, value=p.SerializeToString())
                table[key] = h.encode()
            done["events"] += len(events)
            if done["events"] // 50_000 != (done["events"] - len(events)) // 50_000:
                Path(out_path + ".progress").write_text(str(done["events"]))
            if done["first"] is None:
                done["first"] = time.time() - T_START
            if done["events"] >= n_events:
                await app.producer.flush()
                Path(out_path).write_text(json.dumps({
                    "first_batch_s": done["first"], "all_s": time.time() - T_START,
                    "events": done["events"]}))

    return app


def main() -> None:
    tune_gc()  # the worker process's collector thresholds, so the comparison is only the runtime
    app = build_app(sys.argv[1], int(sys.argv[2]), sys.argv[3])
    faust.Worker(app, loglevel="WARNING", quiet=True).execute_from_commandline()


if __name__ == "__main__":
    main()
