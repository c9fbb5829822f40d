"""Operations on real parts: the three services as processes, a periodic trainer publishing
models in a row while Recommend load runs (zero failures, versions never go backwards, every
item from its answer's model), and a real Prometheus scraping every service's /metrics.

This is also the issue-6 integration scenario (events in -> profile -> recommendation ->
retrain -> hot swap). With ``KAFKA_BOOTSTRAP_SERVERS`` or ``RECSYS_TEST_DOCKER=1`` and a Docker
engine it runs against that Kafka; otherwise against the embedded broker - never skipped.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
import uuid

import grpc
import pytest

from recsys_stream.broker import free_port
from recsys_stream.contracts.model_store import ModelStore
from recsys_stream.contracts.pb import recommender_pb2
from recsys_stream.contracts.keys import make_key
from recsys_stream.kafka import ensure_topics, producer
from recsys_stream.produce import produce_events
from recsys_stream.serving.client import RecommenderClient
from recsys_stream.stack import DEMO_KEYS, Stack, load, wait_until, write_config
from recsys_stream.synthetic import generate_events, make_world

pytestmark = pytest.mark.integration
PROMETHEUS = shutil.which("prometheus")


def _get_json(url):
    return json.loads(urllib.request.urlopen(url, timeout=5).read())


def _query(prom, expr):
    url = f"http://{prom}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    return [(r["metric"], float(r["value"][1])) for r in _get_json(url)["data"]["result"]]


@pytest.fixture
def prometheus(tmp_path):
    if PROMETHEUS is None:
        if os.environ.get("CI"):
            pytest.fail("prometheus is not installed; `make test` installs Debian's package")
        pytest.skip("prometheus not installed (Debian package `prometheus`; make test installs it)")
    started = []

    def start(targets):
        port = free_port()
        cfg = tmp_path / "prometheus.yml"
        jobs = "\n".join(f"  - job_name: {name}\n    static_configs: [{{targets: ['{t}']}}]"
                         for name, t in targets.items())
        cfg.write_text(f"global:\n  scrape_interval: 1s\nscrape_configs:\n{jobs}\n")
        proc = subprocess.Popen([PROMETHEUS, f"--config.file={cfg}",
                                 f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                                 f"--web.listen-address=127.0.0.1:{port}"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        started.append(proc)
        return f"127.0.0.1:{port}"
    yield start
    for p in started:
        p.terminate()
        p.wait(10)


def test_retrain_hot_swap_under_load_and_prometheus_scrapes_every_service(
        tmp_path, kafka_bootstrap, prometheus):
    address = f"127.0.0.1:{free_port()}"
    ports = (free_port(), free_port(), free_port())
    path = write_config(tmp_path / "config.toml", kafka_bootstrap, tmp_path, address,
                        topic_prefix=f"ops{uuid.uuid4().hex[:8]}-", metrics_ports=ports,
                        trainer_interval_s=1.0)
    cfg = load(path)
    ensure_topics(cfg)
    stack = Stack(path, tmp_path)
    worlds = {t: make_world(t, 150) for t in DEMO_KEYS}
    start = int(time.time() * 1000) - 31 * 86_400_000

    def wave(n):  # new users each wave, so the trainer sees new events
        produce_events(cfg, [e for t in DEMO_KEYS for e in generate_events(
            worlds[t], 60, 15, start, seed=n, user_prefix=f"w{n}-")], progress=False)

    store = ModelStore(cfg.model_store)
    try:
        stack.start("worker", "worker")
        stack.start("server", "serve")
        wave(0)
        stack.start("trainer", "trainer", "--periodic")
        wait_until(lambda: store.current_version("acme", "als"), 60, what="a first model",
                   stack=stack)
        client = RecommenderClient(address, DEMO_KEYS["acme"])
        wait_until(lambda: _try(client), 30, what="the server to serve the first model",
                   stack=stack)

        per_client, failures, stop = [[], [], []], [], threading.Event()

        def load_loop(answers: list, c: RecommenderClient):
            n = 0
            while not stop.is_set() and n < 20_000:
                n += 1
                try:
                    answers.append(c.recommend(f"w0-{n % 60}", k=5))
                except grpc.RpcError as e:
                    failures.append(e)
        # three callers, each on its own connection, keep calling while models swap
        clients = [RecommenderClient(address, DEMO_KEYS["acme"]) for _ in per_client]
        threads = [threading.Thread(target=load_loop, args=(a, c), daemon=True)
                   for a, c in zip(per_client, clients)]
        for t in threads:
            t.start()
        first = store.current_version("acme", "als")
        for n in (1, 2, 3):  # three models published in a row under load
            wave(n)
            wait_until(lambda: all(any(a.model_version >= first + n for a in answers[-50:])
                                   for answers in per_client), 60,
                       what=f"model {n} to be served", stack=stack)
        stop.set()
        for t in threads:
            t.join(30)
        for c in clients:
            c.close()
        assert not failures, failures[:3]
        for answers in per_client:  # the order each caller saw
            versions = [a.model_version for a in answers]
            assert len(answers) > 50 and versions == sorted(versions), "versions went backwards"
            assert versions[-1] >= first + 3
        answers = [a for answers in per_client for a in answers]
        items_of = {}
        for a in answers:
            if a.model_version not in items_of:
                items_of[a.model_version] = set(store.load("acme", "als", a.model_version,
                                                           verify=False).item_ids.tolist())
            assert {i.item_id for i in a.items} <= items_of[a.model_version]
        assert {a.source for a in answers} <= {recommender_pb2.NEARLINE, recommender_pb2.BATCH}

        # a bad record and a cold user, so the DLQ and fallback series have something to say
        bad = producer(cfg)
        bad.produce(cfg.topics.interactions, key=make_key("acme", "w0-1"), value=b"\xff\x00junk")
        assert bad.flush(10) == 0
        assert client.recommend("nobody-knows-me", k=3).source == recommender_pb2.TRENDING

        # every service answers /healthz and /metrics; a real Prometheus scrapes all three
        for port in ports:
            assert _get_json(f"http://127.0.0.1:{port}/healthz")["status"] == "ok"
        prom = prometheus({"worker": f"127.0.0.1:{ports[0]}", "trainer": f"127.0.0.1:{ports[1]}",
                           "server": f"127.0.0.1:{ports[2]}"})
        wait_until(lambda: _safe(lambda: sorted(v for _, v in _query(prom, "up")) == [1, 1, 1]),
                   30, interval_s=0.5, what="prometheus to scrape all three services")
        wait_until(lambda: _safe(lambda: _query(prom, "recsys_server_model_version")), 15,
                   interval_s=0.5, what="series in prometheus")
        q = lambda e: sum(v for _, v in _query(prom, e))  # noqa: E731
        assert q('sum(recsys_worker_events_total{outcome="applied"})') >= 4 * 2 * 60 * 10
        assert q("sum(recsys_worker_event_to_profile_seconds_count)") > 0
        assert q("sum(recsys_worker_foldin_seconds_count)") > 0
        wait_until(lambda: _safe(lambda: q('recsys_worker_dlq_total{reason="undecodable"}')
                                 >= 1), 30, interval_s=0.5, what="the DLQ series")
        assert q('sum(recsys_server_fallback_total{tenant="acme",source="TRENDING"})') >= 1
        assert q("sum(recsys_worker_consumer_lag)") >= 0 and _query(prom,
                                                                     "recsys_worker_consumer_lag")
        assert q('sum(recsys_server_requests_total{method="Recommend",status="OK"})') >= 100
        assert q('recsys_server_model_version{tenant="acme",algorithm="als"}') >= first + 3
        assert 0 < q('recsys_trainer_ndcg_at_10{tenant="acme",algorithm="als"}') <= 1
        assert q("sum(recsys_trainer_train_seconds_count)") >= 4
        age = q('time() - recsys_server_model_created_seconds{tenant="acme",algorithm="als"}')
        assert 0 <= age < 600

        out = subprocess.run([sys.executable, "-m", "recsys_stream.cli", "status", "--config",
                              str(path), "--interval", "0.5"], capture_output=True, text=True,
                             timeout=60)
        assert out.returncode == 0, out.stderr
        print(out.stdout)  # shown with -s: the operator's screen
        assert "worker" in out.stdout and "Recommend/s" in out.stdout and "acme" in out.stdout
        client.close()
    finally:
        stack.stop_all()


def _try(client):
    try:
        return client.recommend("w0-1", k=1).model_version > 0
    except grpc.RpcError:
        return False


def _safe(fn):
    try:
        return fn()
    except OSError:
        return False
