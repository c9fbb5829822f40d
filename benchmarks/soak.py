"""Soak: the whole stack under steady load for a long time, on Apache Kafka by default.

    OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/soak.py [--minutes 30] [--rate 2000]
        [--qps 300] [--retrain-minutes 5] [--users 20000] [--items 5000] [--broker kafka|tansu]
        [--world latent|independent] [--user-zipf 1.0] [--history-cap N]

A steady-state world, where every user's history reaches its cap within the first minutes (so
RSS growth after minute 5 measures the processes, not data that still grows):
``--users 5000 --user-zipf 0 --history-cap 50`` (each user 0.4 events/s at 2k/s).

Setup: a one-node broker, worker, server and a periodic trainer (``trainer --periodic``,
a round every ``--retrain-minutes``) as OS processes, as ``make demo`` runs them. A paced
producer sends ``--rate`` events/s of Zipf-skewed users with current timestamps; a gRPC client
asks ``Recommend`` ``--qps`` times a second for users that have events.

Every minute it prints each process's RSS (the broker's too), the worker's CPU in that
minute beside its lag (so a starved worker and a slow one can be told apart), errors so far,
the changelog's records and bytes on disk per input event, and every trainer round's changelog
read time. At the end: RSS growth after the first 5 minutes, the lag after each retrain, the
last round's read time against the round nearest minute 5, and the changelog topic settings
that keep its compacted size near users x state size. Asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import threading
import time
import urllib.request
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._common import BROKERS, TENANT, encode_interaction, load_note, log, start_broker, \
    zipf_draws  # noqa: E402

import numpy as np  # noqa: E402
import psutil  # noqa: E402
from confluent_kafka import TopicPartition  # noqa: E402
from confluent_kafka.admin import AdminClient, ConfigResource  # noqa: E402

from recsys_stream.broker import free_port  # noqa: E402
from recsys_stream.kafka import consumer, ensure_topics, producer  # noqa: E402
from recsys_stream.serving.client import RecommenderClient  # noqa: E402
from recsys_stream.stack import Stack, load, wait_until, write_config  # noqa: E402
from recsys_stream.synthetic import make_world  # noqa: E402

KEY = "soak-key"
_READ = re.compile(r"^(\S+ \S+) .*read (\d+) changelog records \((\w[\w ]*)\) in ([\d.]+)s")
_PUBLISHED = re.compile(r"^(\S+ \S+) .* v(\d+) published")
_LAG_EVERY_S = 2.0


def log_time(stamp: str) -> float:
    """Epoch seconds of a log line's ``%(asctime)s`` (local time)."""
    return datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp()


def lag_after_rounds(lines: list[str], lags: list[tuple[float, int]]) -> list[str]:
    """Per trainer round that published: the worker's highest lag from the round's start (its
    changelog read) to its publication, and how long after the publication (the worker then
    re-solves its recent users against the new model) the lag was first seen at 0 again."""
    starts = [log_time(m[1]) - float(m[4]) for m in map(_READ.match, lines) if m]
    ends = [(log_time(m[1]), m[2]) for m in map(_PUBLISHED.match, lines) if m]
    out = []
    for end, version in ends:
        start = max((t for t in starts if t <= end), default=end)
        nxt = min((t for t in starts if t > end), default=float("inf"))
        during = [lag for t, lag in lags if start <= t <= end and lag >= 0]
        zero = next((t for t, lag in lags if t > end and lag == 0), None)
        back = ("never seen at 0 again" if zero is None else
                f"back to 0 {zero - end:.0f} s after it" +
                ("" if zero < nxt else ", after the next round had started"))
        out.append(f"v{version} published at {time.strftime('%H:%M:%S', time.localtime(end))}"
                   f": lag up to {max(during, default=-1)} during the round, {back}")
    return out


def rss_mb(proc: psutil.Process) -> float:
    """RSS of a process and its children (the server's pool), MB."""
    try:
        procs = [proc, *proc.children(recursive=True)]
        return sum(p.memory_info().rss for p in procs if p.is_running()) / 1e6
    except psutil.NoSuchProcess:
        return float("nan")


def worker_lag(port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
            text = r.read().decode()
    except OSError:
        return -1
    return int(sum(float(v) for v in re.findall(
        r"^recsys_worker_consumer_lag\{[^}]*\} ([\d.e+]+)$", text, re.M)))


def health(port: int) -> str:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
            return json.loads(r.read()).get("status", "")
    except OSError:
        return ""


def latent_items(world, users: np.ndarray, seed: int) -> np.ndarray:
    """Item rows for the events of ``users`` with ``recsys_stream.synthetic``'s latent structure:
    user ``u`` keeps the genre pair ``u mod 56`` (weights 1 and 0.6), items drawn with
    probability ``popularity * exp(3 * preference)``, so ALS can beat popularity and the
    trainer's gate lets its models through (independent draws make every model fail it: no
    hot swap would happen)."""
    rng = np.random.default_rng(10_000 + seed)
    pairs = [(a, b) for a in range(world.genres) for b in range(world.genres) if a != b]
    out = np.empty(len(users), np.int64)
    group = users % len(pairs)
    for g, (a, b) in enumerate(pairs):
        at = np.flatnonzero(group == g)
        if len(at):
            pref = np.zeros(world.genres)
            pref[[a, b]] = [1.0, 0.6]
            w = world.popularity * np.exp(3.0 * pref[world.item_genre])
            out[at] = rng.choice(len(world.item_ids), size=len(at), p=w / w.sum())
    return out


class Load:
    """The paced producer and the Recommend client, each on a thread."""

    def __init__(self, cfg, address: str, args) -> None:
        self.cfg, self.address, self.args = cfg, address, args
        self.sent = self.calls = self.errors = 0
        self.seen_users: list[str] = []
        self.stop = threading.Event()
        self.error_samples: list[str] = []
        self.lags: list[tuple[float, int]] = []  # (epoch s, worker lag) every _LAG_EVERY_S

    def sample_lag(self, port: int) -> None:
        while not self.stop.wait(_LAG_EVERY_S):
            self.lags.append((time.time(), worker_lag(port)))

    def produce(self) -> None:
        n_block = int(self.args.rate * 60)
        world = make_world(TENANT, self.args.items)
        item_ids = world.item_ids
        prod = producer(self.cfg, partitioner="murmur2_random")
        t0, block, seed = time.perf_counter(), None, 0
        while not self.stop.is_set():
            if block is None or self.sent - seed * n_block >= n_block:
                seed = self.sent // n_block
                block = zipf_draws(n_block, self.args.users, self.args.items,
                                   zipf=self.args.user_zipf, seed=seed + 1)
                if self.args.world == "latent":
                    block = (block[0], latent_items(world, block[0], seed + 1), block[2])
            due = int((time.perf_counter() - t0) * self.args.rate)
            users, items, types = block
            while self.sent < due:
                j = self.sent - seed * n_block
                if j >= n_block:
                    break
                key, value = encode_interaction(self.sent, int(users[j]), item_ids[items[j]],
                                                types[j], int(time.time() * 1000))
                prod.produce(self.cfg.topics.interactions, key=key, value=value)
                if len(self.seen_users) < 2000 and j % 7 == 0:
                    self.seen_users.append(f"u{int(users[j])}")
                self.sent += 1
            prod.poll(0)
            time.sleep(0.005)
        prod.flush(30)

    def query(self) -> None:
        client = RecommenderClient(self.address, KEY, timeout=5.0)
        t0, i = time.perf_counter(), 0
        while not self.stop.is_set():
            if i >= (time.perf_counter() - t0) * self.args.qps or not self.seen_users:
                time.sleep(0.001)
                continue
            try:
                client.recommend(self.seen_users[i % len(self.seen_users)], k=10)
            except Exception as e:  # noqa: BLE001 - counted and shown
                self.errors += 1
                if len(self.error_samples) < 5:
                    self.error_samples.append(repr(e)[:200])
            self.calls += 1
            i += 1


def changelog_disk(broker, topic: str) -> int | None:
    """Bytes of the changelog's partitions in the Kafka log directory (None on tansu)."""
    nodes = getattr(broker, "nodes", None)
    if not nodes:
        return None
    total = 0
    for d in (nodes[0].data_dir / "log").glob(f"{topic}-*"):
        total += sum(f.stat().st_size for f in d.iterdir() if f.suffix == ".log")
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=30)
    ap.add_argument("--rate", type=float, default=2000, help="events per second")
    ap.add_argument("--qps", type=float, default=300, help="Recommend calls per second")
    ap.add_argument("--retrain-minutes", type=float, default=5)
    ap.add_argument("--users", type=int, default=20_000)
    ap.add_argument("--items", type=int, default=5_000)
    ap.add_argument("--broker", choices=BROKERS, default="kafka")
    ap.add_argument("--world", choices=("latent", "independent"), default="latent",
                    help="latent: users keep genre tastes (models pass the gate and swap in); "
                         "independent: items drawn by popularity alone (every model fails the "
                         "popularity gate)")
    ap.add_argument("--user-zipf", type=float, default=1.0,
                    help="exponent of the users' Zipf activity (0 = every user alike)")
    ap.add_argument("--history-cap", type=int, default=None,
                    help="the tenant's history_cap (default the config's, 500): a small cap "
                         "makes the per-user state stop growing early, so RSS growth after "
                         "minute 5 tells a leak from data that still grows")
    ap.add_argument("--segment-ms", type=int, default=60_000,
                    help="segment.ms of the compacted topics (the head the cleaner leaves)")
    args = ap.parse_args()
    log(f"soak on {args.broker}: {args.minutes:.0f} min, {args.rate:.0f} events/s of "
        f"{args.users} users, {args.qps:.0f} Recommend/s, a retrain every "
        f"{args.retrain_minutes:g} min ({load_note()})")
    import tempfile
    with start_broker(args.broker) as broker, tempfile.TemporaryDirectory() as tmp:
        wd = Path(tmp)
        address = f"127.0.0.1:{free_port()}"
        ports = (free_port(), free_port(), free_port())
        path = write_config(wd / "soak.toml", broker.bootstrap_servers, wd, address,
                            keys={TENANT: KEY}, metrics_ports=ports,
                            trainer_interval_s=args.retrain_minutes * 60)
        text = path.read_text().replace(
            "[kafka]\n", f"[kafka]\ncompacted_segment_ms = {args.segment_ms}\n"
                         "compacted_dirty_ratio = 0.1\n", 1)
        if args.history_cap:
            text = text.replace(f"[tenants.{TENANT}]\n",
                                f"[tenants.{TENANT}]\nhistory_cap = {args.history_cap}\n", 1)
        path.write_text(text)
        cfg = load(path)
        ensure_topics(cfg)
        stack = Stack(path, wd)
        try:
            procs = {"worker": stack.start("worker", "worker"),
                     "server": stack.start("server", "serve"),
                     "trainer": stack.start("trainer", "trainer", "--periodic")}
            ps = {n: psutil.Process(p.pid) for n, p in procs.items()}
            ps["broker"] = psutil.Process(broker.pid)
            load_ = Load(cfg, address, args)
            threads = [threading.Thread(target=load_.produce, daemon=True),
                       threading.Thread(target=load_.query, daemon=True),
                       threading.Thread(target=load_.sample_lag, args=(ports[0],),
                                        daemon=True)]
            wait_until(lambda: worker_lag(ports[0]) >= 0, 60, stack=stack, what="the worker")
            wait_until(lambda: health(ports[2]) == "ok", 60, stack=stack, what="the server")
            for t in threads:
                t.start()
            t_start = time.time()
            samples = []
            cpu_last = sum(ps["worker"].cpu_times()[:2])
            minute = 0
            while time.time() - t_start < args.minutes * 60:
                time.sleep(max(0.0, t_start + (minute + 1) * 60 - time.time()))
                minute += 1
                stack.check_alive()
                cpu = sum(ps["worker"].cpu_times()[:2])
                rss = {n: rss_mb(p) for n, p in ps.items()}
                lag = worker_lag(ports[0])
                disk = changelog_disk(broker, cfg.topics.state_changelog)
                c = consumer(cfg, group_id="soak-watermarks")
                written = sum(c.get_watermark_offsets(
                    TopicPartition(cfg.topics.state_changelog, p), timeout=10)[1]
                    for p in range(cfg.kafka.interaction_partitions))
                c.close()
                samples.append({"minute": minute, "rss": rss, "lag": lag,
                                "cpu": cpu - cpu_last, "errors": load_.errors})
                cpu_last = cpu
                per_event = (f"; changelog {written / max(load_.sent, 1):.2f} records/event"
                             + ("" if disk is None else
                                f", {disk / max(load_.sent, 1):.0f} B on disk/event, "
                                f"{disk / 1e6:.1f} MB"))
                log(f"min {minute}: RSS " + ", ".join(f"{n} {v:.0f} MB" for n, v in rss.items())
                    + f"; worker CPU {samples[-1]['cpu'] / 60:.2f} core, lag {lag}; sent "
                    f"{load_.sent}, Recommend {load_.calls} ({load_.errors} errors)" + per_event)
            load_.stop.set()
            for t in threads:
                t.join(30)
            wait_until(lambda: worker_lag(ports[0]) == 0, 120, stack=stack,
                       what="the worker to catch up")
            log("lag back to 0 after the load stopped")
            trainer_log = stack.tail("trainer", 100_000).splitlines()
            rounds = [(m[1], m[3], float(m[4])) for m in map(_READ.match, trainer_log) if m]
        finally:
            stack.stop_all()
        admin = AdminClient({"bootstrap.servers": broker.bootstrap_servers})
        res = ConfigResource(ConfigResource.Type.TOPIC, cfg.topics.state_changelog)
        try:
            conf = admin.describe_configs([res])[res].result(10)
            settings = {k: conf[k].value for k in ("cleanup.policy", "segment.ms",
                                                   "segment.bytes", "min.cleanable.dirty.ratio")
                        if k in conf}
        except Exception as e:  # noqa: BLE001 - tansu answers DescribeConfigs partly
            settings = {"error": str(e)[:100]}
    log(f"changelog settings: {settings}")
    for when, mode, secs in rounds:
        log(f"trainer round at {when}: changelog read ({mode}) {secs:.1f}s")
    if len(rounds) >= 2:
        # the target compares the last round with the round nearest minute 5
        near5 = min(rounds, key=lambda r: abs(log_time(r[0]) - (t_start + 300)))
        log(f"last round's read / the round nearest minute 5 ({near5[0]}): {rounds[-1][2]:.1f} "
            f"/ {near5[2]:.1f} s = {rounds[-1][2] / max(near5[2], 1e-3):.2f}x (target <= 1.5x)")
    for line in lag_after_rounds(trainer_log, load_.lags):
        log(f"lag: {line}")
    base = next((s for s in samples if s["minute"] >= 5), samples[0] if samples else None)
    if base and samples:
        growth = {n: samples[-1]["rss"][n] / base["rss"][n] - 1 for n in base["rss"]}
        log("RSS growth after minute 5: " + ", ".join(f"{n} {100 * g:+.0f} %"
                                                      for n, g in growth.items()))
        # the trainer holds no data before its first round: its growth from the minute after it
        first = min((log_time(m[1]) for m in map(_PUBLISHED.match, trainer_log) if m),
                    default=None)
        after = next((s for s in samples if first is not None
                      and t_start + 60 * s["minute"] > first and s["minute"] >= 5), None)
        if after is not None and after is not samples[-1]:
            log(f"trainer RSS growth from minute {after['minute']} (its first round published "
                f"before it): {100 * (samples[-1]['rss']['trainer'] / after['rss']['trainer'] - 1):+.0f} %")
    log(f"errors: {load_.errors} in {load_.calls} Recommend calls {load_.error_samples}; "
        f"events sent {load_.sent} ({load_note()})")


if __name__ == "__main__":
    main()
