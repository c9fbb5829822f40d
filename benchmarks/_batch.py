"""Shared setup of the batch-training benchmarks (quality, tuning, freshness, scale).

MovieLens comes in through the trainer's own reader and aggregation
(``iter_events_file`` -> ``from_events``), with the tenant settings of ``config/movielens.toml``,
so every figure is about the code paths the trainer runs. Every printed figure carries the
machine's load average, because the machine may be shared while it is measured.
"""

from __future__ import annotations

import os
import resource
import sys
from collections import defaultdict
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from recsys_stream.batch.data import TenantData, from_events, holdout_cut, \
    iter_events_file  # noqa: E402
from recsys_stream.config import Config, TenantConfig, load_config  # noqa: E402
from recsys_stream.contracts.events import Event  # noqa: E402

# ../shared/data beside the project, never an absolute path of one machine
MOVIELENS = ROOT.parent / "shared" / "data" / "movielens-latest-small-ratings.csv"
MOVIELENS_CONFIG = ROOT / "config" / "movielens.toml"
TENANT = "movielens"
METRICS = ("precision_at_10", "recall_at_20", "ndcg_at_10", "map_at_10", "coverage",
           "popularity_concentration")
HEADERS = ("P@10", "R@20", "NDCG@10", "MAP@10", "cover", "pop.conc")


def movielens_config(path: str | Path = MOVIELENS_CONFIG) -> Config:
    """The benchmark deployment's config (tenant ``movielens`` and its tuned settings)."""
    return load_config(path, env={})


def read_events(path: str | Path = MOVIELENS) -> list[Event]:
    """Every event of the file as the tenant's (MovieLens ratings become ``rating`` events)."""
    return list(iter_events_file(path, tenant=TENANT))


def holdout(events: list[Event], tc: TenantConfig, fraction: float) -> TenantData:
    """The trainer's temporal holdout: each user's last ``fraction`` of events is the test."""
    return from_events(TENANT, events, tc.confidence, tc.history_cap, fraction)


def training_part(events: list[Event], fraction: float) -> list[Event]:
    """The events the holdout leaves in train (each user's first ``holdout_cut`` in time order).

    Applying :func:`holdout` to these carves a validation split out of the training part, so
    hyperparameters are chosen without looking at the test holdout.
    """
    by_user: dict[str, list[Event]] = defaultdict(list)
    for e in events:
        by_user[e.user_id].append(e)
    out = []
    for evs in by_user.values():
        evs.sort(key=lambda e: e.timestamp_ms)  # stable, as from_events sorts
        out += evs[:holdout_cut(len(evs), fraction)]
    return out


def load() -> str:
    """The 1/5/15-minute load averages, to print next to every figure."""
    return "load %.2f %.2f %.2f (%d cores)" % (*os.getloadavg(), os.cpu_count() or 0)


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def metrics_table(rows: list[tuple[str, dict]]) -> str:
    """One line per model: the holdout metrics of ``evaluate``."""
    width = max(len(name) for name, _ in rows)
    lines = [f"{'model':<{width}}  " + " ".join(f"{h:>8}" for h in HEADERS)]
    for name, m in rows:
        lines.append(f"{name:<{width}}  " + " ".join(f"{m[k]:>8.4f}" for k in METRICS))
    return "\n".join(lines)
