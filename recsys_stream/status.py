"""``recsys-stream status``: one screen for operators, from the services' own endpoints.

Two scrapes of each service's ``/metrics`` a moment apart give rates; ``/healthz`` gives each
process's own view; the model store gives versions, ages and the last training metrics.
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections import defaultdict

from prometheus_client.parser import text_string_to_metric_families

from recsys_stream.config import Config
from recsys_stream.contracts.model_store import ModelStore


def scrape(url: str, timeout: float = 2.0) -> dict[tuple[str, tuple], float] | None:
    """Samples of a /metrics page as {(name, sorted labels): value}; None if unreachable."""
    try:
        text = urllib.request.urlopen(url, timeout=timeout).read().decode()
    except OSError:
        return None
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def health(url: str) -> dict:
    try:
        return json.loads(urllib.request.urlopen(url, timeout=2.0).read())
    except OSError as e:
        return {"status": f"unreachable ({getattr(e, 'reason', e)})"}


def _sum(samples, name, **match) -> float:
    return sum(v for (n, labels), v in samples.items() if n == name
               and all(dict(labels).get(k) == val for k, val in match.items()))


def _by(samples, name, label) -> dict[str, float]:
    out: dict[str, float] = defaultdict(float)
    for (n, labels), v in samples.items():
        if n == name:
            out[dict(labels).get(label, "")] += v
    return dict(out)


def quantile(samples, name: str, q: float) -> float | None:
    """Quantile of a histogram from its cumulative buckets (upper bound of the bucket), over
    all its label sets together (each bucket summed across them)."""
    by_le: dict[float, float] = {}
    for (n, labels), v in samples.items():
        if n == f"{name}_bucket":
            le = float(dict(labels)["le"])
            by_le[le] = by_le.get(le, 0.0) + v
    buckets = sorted(by_le.items())
    total = buckets[-1][1] if buckets else 0
    if not total:
        return None
    for le, count in buckets:
        if count >= q * total:
            return le
    return None


def render(cfg: Config, host: str = "127.0.0.1", interval_s: float = 2.0) -> str:
    ports = {"worker": cfg.worker.metrics_port, "items": cfg.items.metrics_port,
             "trainer": cfg.trainer.metrics_port, "server": cfg.server.metrics_port}
    first = {n: scrape(f"http://{host}:{p}/metrics") if p else None for n, p in ports.items()}
    time.sleep(interval_s)
    second = {n: scrape(f"http://{host}:{p}/metrics") if p else None for n, p in ports.items()}
    lines = [f"recsys-stream status  {time.strftime('%Y-%m-%d %H:%M:%S')}  "
             f"(broker {cfg.kafka.bootstrap_servers}, store {cfg.model_store})", ""]

    def rate(name, svc, **m):
        a, b = first[svc], second[svc]
        return (_sum(b, name, **m) - _sum(a, name, **m)) / interval_s if a and b else 0.0

    for svc, port in ports.items():
        if not port:
            lines.append(f"{svc:<8} metrics_port not configured")
            continue
        h = health(f"http://{host}:{port}/healthz")
        lines.append(f"{svc:<8} :{port:<6} {h.get('status')}")
        s = second[svc]
        if not s:
            continue
        if svc == "worker":
            lag = _by(s, "recsys_worker_consumer_lag", "partition")
            dlq = _by(s, "recsys_worker_dlq_total", "reason")
            p50 = quantile(s, "recsys_worker_event_to_profile_seconds", 0.5)
            p99 = quantile(s, "recsys_worker_event_to_profile_seconds", 0.99)
            lines += [f"         events/s {rate('recsys_worker_events_total', svc):.0f}   "
                      f"lag {int(sum(lag.values()))} "
                      f"({', '.join(f'p{p}={int(v)}' for p, v in sorted(lag.items()))})",
                      f"         event->profile p50 <= {p50}s, p99 <= {p99}s   "
                      f"DLQ total {int(sum(dlq.values()))} "
                      + " ".join(f"{r}={int(v)}" for r, v in sorted(dlq.items())),
                      f"         models {h.get('models', {})}"]
        elif svc == "server":
            ok = rate("recsys_server_requests_total", svc, status="OK")
            fb = rate("recsys_server_fallback_total", svc)
            by_src = _by(s, "recsys_server_requests_total", "source")
            p99 = quantile(s, "recsys_server_request_seconds", 0.99)
            lines += [f"         Recommend/s {rate('recsys_server_requests_total', svc):.0f} "
                      f"(ok {ok:.0f})   fallback rate "
                      f"{(fb / ok if ok else 0):.0%}   p99 <= {p99}s",
                      "         answers by source "
                      + " ".join(f"{k}={int(v)}" for k, v in sorted(by_src.items())),
                      f"         live models {h.get('models', {})}   "
                      f"default {h.get('default_algorithm', {})}",
                      "         new-item vectors served "
                      + " ".join(f"{k}={int(v)}" for k, v in sorted(
                          _by(s, "recsys_server_new_item_vectors", "tenant").items()))]
        elif svc == "items":
            p50 = quantile(s, "recsys_items_event_to_vector_seconds", 0.5)
            p99 = quantile(s, "recsys_items_event_to_vector_seconds", 0.99)
            lines.append(f"         records/s {rate('recsys_items_records_total', svc):.0f}   "
                         f"vectors/s {rate('recsys_items_vectors_published_total', svc):.0f}"
                         f"   event->vector p50 <= {p50}s, p99 <= {p99}s")
        else:
            lines.append(f"         last round {h.get('last_round_finished')}   rejected models "
                         f"{int(_sum(s, 'recsys_trainer_models_rejected_total'))}")
    lines += ["", "tenant     algorithm  current  default  age       NDCG@10  recall@20  "
              "popularity NDCG@10"]
    store = ModelStore(cfg.model_store)
    for tenant in store.tenants():
        default = store.default_algorithm(tenant)
        for algorithm in ("als", "bpr"):
            v = store.current_version(tenant, algorithm)
            if v is None:
                continue
            m = store.load(tenant, algorithm, v, verify=False).manifest
            age = time.time() - m.get("created_ms", 0) / 1000
            met = m.get("metrics", {})
            pop = m.get("baseline_metrics", {}).get("popularity", {})
            lines.append(f"{tenant:<10} {algorithm:<10} v{v:<7} {'yes' if algorithm == default else '':<8}"
                         f" {_age(age):<9} {met.get('ndcg_at_10', 0):<8.4f} "
                         f"{met.get('recall_at_20', 0):<10.4f} {pop.get('ndcg_at_10', 0):.4f}")
    return "\n".join(lines)


def _age(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.0f}s"
