"""The one configuration of every process, with a comment on every key.

Loaded from a TOML file (``--config``; ``config/recsys-stream.toml`` documents every key), then
the environment: ``KAFKA_BOOTSTRAP_SERVERS`` overrides ``kafka.bootstrap_servers``. Unknown keys
are errors, so a typo never silently leaves a default in force.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints

from recsys_stream.contracts.confidence import DEFAULT_WEIGHTS, ConfidenceSettings
from recsys_stream.contracts.caps import HOUR_MS, CapRule
from recsys_stream.contracts.experiments import parse_experiments
from recsys_stream.contracts.topics import Topics
from recsys_stream.credentials import resolve


@dataclass(frozen=True)
class KafkaConfig:
    bootstrap_servers: str = "127.0.0.1:9092"  # host:port list; env KAFKA_BOOTSTRAP_SERVERS wins
    topic_prefix: str = ""                     # put in front of every topic name
    interaction_partitions: int = 4            # partitions of `interactions` (the unit of scale-out)
    replication_factor: int = 1                # of every topic the project creates
    compacted_segment_ms: int = 3_600_000      # segment.ms of compacted topics: the head the cleaner cannot touch
    compacted_dirty_ratio: float = 0.5         # min.cleanable.dirty.ratio of compacted topics
    raw_retention_ms: int = 604_800_000        # retention.ms of interactions, its DLQ and item-interactions: how long raw events (and erased users' raw events) live
    compacted_delete_retention_ms: int = 86_400_000  # delete.retention.ms of compacted topics: how long a tombstone (an erasure) stays after cleaning; keep it above trainer.interval_s
    client: dict = field(default_factory=dict)  # librdkafka properties given to every client (security);
                                               # "env:NAME" / "file:/path" values are read at load
                                               # and held as credentials.Secret (never shown)
    connect_timeout_s: float = 15.0            # at process start a metadata request must answer within
                                               # this, else the process exits naming the cause

    def __post_init__(self) -> None:
        # the one place references are read; a copy (Config.replace) passes its Secrets through
        object.__setattr__(self, "client", resolve(self.client))


@dataclass(frozen=True)
class AlsConfig:
    factors: int = 64              # latent dimension k
    regularization: float = 0.05   # lambda, unscaled (spark with als_solver "mllib": regParam,
                                   # which MLlib multiplies by each user's item count)
    iterations: int = 15           # ALS sweeps


@dataclass(frozen=True)
class BprConfig:
    factors: int = 64              # latent dimension k (item factors get one more: the bias)
    learning_rate: float = 0.01    # SGD step
    regularization: float = 0.01   # L2 on factors
    iterations: int = 100          # epochs
    foldin_regularization: float = 0.1  # lambda of the least-squares fold-in on BPR factors


ENGINES = ("implicit", "spark")
# What the hyperparameter search tunes (batch/tuning.py), and what a tenant may pin.
PIN_KEYS = ("als_factors", "als_regularization", "alpha", "bpr_learning_rate",
            "bpr_regularization", "bpr_iterations")  # where the trainer fits factors (recsys_stream.batch.engines)


@dataclass(frozen=True)
class MfConfig:
    """Biased matrix factorisation of explicit ratings (``batch/mf.py``)."""

    solver: str = "als"            # "als": closed-form ridge per side; "sgd": Funk/Koren updates
    factors: int = 50              # latent dimension k
    regularization: float = 15.0   # lambda on x_u and y_i
    bias_regularization: float = 15.0  # lambda on b_u and b_i
    scale_regularization: bool = False  # multiply both lambdas by the row's rating count
    iterations: int = 20           # ALS sweeps; SGD: most epochs
    learning_rate: float = 0.005   # SGD step (factors and biases)
    early_stopping: float = 0.1    # SGD: share of each user's latest train ratings held out to pick
                                   # the epoch count (then refitted on all); 0 = run every epoch
    patience: int = 3              # SGD: epochs without a better validation RMSE before stopping
    damping: float = 5.0           # baseline predictor: pseudo-counts of the damped bias means
    init_std: float = 0.1          # standard deviation of the initial factors
    recency_half_life_days: float = 0.0  # ALS: a rating this much older than the user's latest
                                   # counts half in both ridge steps (and the fold-in); 0 = off


@dataclass(frozen=True)
class FrequencyCapConfig:
    impressions: int = 0           # an item shown this often within the window without a positive
                                   # event is suppressed for the user until the window passed; 0 = off
    window_hours: float = 24.0     # the sliding window of the count

    @property
    def rule(self) -> CapRule:
        return CapRule(int(self.impressions), int(self.window_hours * HOUR_MS))


@dataclass(frozen=True)
class TenantConfig:
    api_key_sha256: tuple[str, ...] = ()    # sha256 hex of each API key bound to this tenant
    admin_key_sha256: tuple[str, ...] = ()  # keys that may also call operator methods
    weights: dict = field(default_factory=lambda: dict(DEFAULT_WEIGHTS))  # event type -> weight
    half_life_days: float = 30.0   # recency half-life of an event's strength
    alpha: float = 2.0             # c = 1 + alpha * log1p(strength)
    history_cap: int = 500         # items kept per user (strongest first); trimmed once 10 % over
    min_item_users: int = 3        # a new item gets a vector once this many distinct users touched it
    max_item_users: int = 200      # users kept per new item (the first ones); the re-solve bound
    young_item_users: int = 80     # a model's item with fewer training users is re-solved nearline
                                   # as users arrive (its young slice; 0 = off); benchmarks/churn.py
    als: AlsConfig = field(default_factory=AlsConfig)  # ALS hyperparameters
    bpr: BprConfig = field(default_factory=BprConfig)  # BPR hyperparameters
    mf: MfConfig = field(default_factory=MfConfig)     # explicit MF hyperparameters
    rating_min: float = 0.5        # the rating scale: ratings outside it are dead letters,
    rating_max: float = 5.0        # predictions are clipped to it
    max_magnitude: float = 1e6     # an event's magnitude (`value`) is capped here
    engine: str = ""               # training engine of this tenant; "" = trainer.engine
    pin: dict = field(default_factory=dict)  # hyperparameters the search never moves (PIN_KEYS),
                                   # e.g. {"als_factors": 64}; they win over a tuned value too
    exploration_share: float = 0.0          # share of Recommend slots for young items (0 = off;
                                            # at least one slot when above 0 and one is eligible)
    exploration_max_age_hours: float = 72.0  # young = launched (catalog created_ms) this recently
    exploration_max_users: int = 50         # ... and touched by at most this many users so far
    attribution_window_s: float = 1800.0  # online: an event without a recommendation_id joins
                                   # the user's latest answer holding the item served this recently
    click_types: tuple[str, ...] = ("click",)  # online: event types counted as clicks
    conversion_types: tuple[str, ...] = ("add_to_cart", "purchase")  # ... and as conversions
    experiments: tuple = ()        # [[tenants.T.experiments]]: name and arms (contracts.experiments)
    frequency_cap: FrequencyCapConfig = field(default_factory=FrequencyCapConfig)  # { impressions,
                                   # window_hours }: the worker's caps (contracts.caps); off by default

    def __post_init__(self) -> None:
        object.__setattr__(self, "experiments", parse_experiments(self.experiments))
        if self.engine not in ("", *ENGINES):
            raise ValueError(f"config tenant engine must be one of {ENGINES}, got {self.engine!r}")
        unknown = set(self.pin) - set(PIN_KEYS)
        if unknown:
            raise ValueError(f"config tenant pin: unknown keys {sorted(unknown)}; expected some "
                             f"of {PIN_KEYS}")
        if not 0.0 <= self.exploration_share <= 1.0:
            raise ValueError(f"config tenant exploration_share must be 0..1, got "
                             f"{self.exploration_share}")

    @property
    def confidence(self) -> ConfidenceSettings:
        return ConfidenceSettings(weights=dict(self.weights), half_life_days=self.half_life_days,
                                  alpha=self.alpha, max_magnitude=self.max_magnitude)


@dataclass(frozen=True)
class WorkerConfig:
    state_dir: str = "var/worker-state"   # RocksDB directory (one per worker process)
    partitions: tuple[int, ...] = ()      # manual assignment; () = share them in the worker group
    session_timeout_ms: int = 10_000      # group: a worker killed without leaving keeps its partitions so long
    batch_max_events: int = 20000         # events per micro-batch at most
    batch_timeout_ms: int = 5             # wait this long for input when none is fetched yet
                                          # (fetched input is taken at once: kafka.consume_ready)
    commit_interval_ms: int = 500         # state, offsets and changelog committed this often;
                                          # a crash replays at most this much input. 0 = every batch
    normal_cache_users: int = 2048        # heavy users whose fold-in systems are kept and updated
                                          # between batches, per model (~40 KB each at k=64); 0 = off
    state_cache_items: int = 500_000      # decoded histories kept in memory, counted in items
                                          # (~0.3 KB each): heavy users are not re-decoded
    max_future_ms: int = 3_600_000        # events further in the future are rejected (DLQ)
    max_past_ms: int = 10 * 365 * 86_400_000  # events older than this are rejected (DLQ)
    resolve_active_days: float = 7.0      # on a new model, re-solve users active this recently
    metrics_port: int = 0                 # Prometheus /metrics port; 0 = off


@dataclass(frozen=True)
class OnlineConfig:
    state_dir: str = "var/online-state"   # RocksDB directory of the online-evaluation stage
    partitions: tuple[int, ...] = ()      # manual assignment; () = share them in the stage's group
    session_timeout_ms: int = 10_000      # group: a stage killed without leaving keeps its partitions so long
    batch_max_events: int = 5000          # records of both topics per micro-batch at most
    batch_timeout_ms: int = 20            # wait this long for input when none is fetched yet
    commit_interval_ms: int = 1000        # states, counters and offsets committed this often (0 = every batch)
    metrics_port: int = 0                 # Prometheus /metrics port of the stage; 0 = off


@dataclass(frozen=True)
class ItemsConfig:
    enabled: bool = True                  # the worker emits item-interactions for new items
    state_dir: str = "var/item-state"     # RocksDB directory of the item fold-in stage
    partitions: tuple[int, ...] = ()      # manual assignment; () = share them in the stage's group
    session_timeout_ms: int = 10_000      # group: a stage killed without leaving keeps its partitions so long
    batch_max_events: int = 5000          # item-interactions per micro-batch at most
    batch_timeout_ms: int = 5             # wait this long for input when none is fetched yet
    commit_interval_ms: int = 500         # states and offsets committed this often (0 = every batch)
    worker_refresh_ms: int = 1000         # the worker rebuilds its fold-in with new items' vectors at most this often
    metrics_port: int = 0                 # Prometheus /metrics port of the stage; 0 = off


# trainer.spark.als_solver: the project's unscaled steps, or Spark MLlib's ALS (batch/engines/spark.py)
SPARK_ALS_SOLVERS = ("unscaled", "mllib")


@dataclass(frozen=True)
class SparkConfig:
    master: str = "local[*]"        # Spark master URL: local[N], spark://host:port, ...
    settings: dict = field(default_factory=dict)  # Spark properties passed through ("spark.*")
    als_solver: str = "unscaled"    # "unscaled": the project's exact ALS steps in Spark tasks,
                                    # lambda as implicit weighs it; "mllib": Spark MLlib's ALS
                                    # (lambda x each user's count, ALS-WR)
    als_blocks: int = 0             # blocks a side (ALS numUserBlocks = numItemBlocks); 0 = Spark's
                                    # default (mllib: 10; unscaled: the default parallelism)
    connect_timeout_s: float = 5.0  # a spark:// master must accept a connection within this
    read_timeout_s: float = 300.0   # a task reading one changelog partition gives up after this

    def __post_init__(self) -> None:
        if self.als_solver not in SPARK_ALS_SOLVERS:
            raise ValueError(f"config trainer.spark.als_solver: {self.als_solver!r} is not one "
                             f"of {SPARK_ALS_SOLVERS}")
        bad = sorted(k for k in self.settings if not str(k).startswith("spark."))
        if bad:
            raise ValueError(f"config trainer.spark.settings: not Spark properties: {bad}")


@dataclass(frozen=True)
class TrainerConfig:
    interval_s: float = 300.0       # periodic mode: seconds between rounds
    min_new_events: int = 1         # periodic mode: skip a tenant with fewer new events
    keep_versions: int = 5          # good versions kept per tenant and algorithm (rollback),
                                    # and as many rejected ones; the current one always
    algorithms: tuple[str, ...] = ("als",)  # trained per round
    holdout_fraction: float = 0.2   # last share of each user's events held out for evaluation
    eval_max_users: int = 10_000    # holdout metrics over at most this many test users; 0 = all
    seed: int = 42                  # random state of the trainers
    max_vector_norm: float = 1e3    # gate: any user or item vector longer than this rejects
    min_mean_item_norm: float = 1e-4  # gate: mean item vector norm below this (collapsed) rejects
    ndcg_tolerance: float = 0.05    # gate: relative NDCG@10 drop allowed against the current model
    rmse_tolerance: float = 0.02    # gate (mf): relative RMSE rise allowed against the current model
    min_compare_users: int = 200    # gate: compare with the current model on held-out items
                                    # met after its data when this many users have some (both
                                    # on one test); fewer, or 0: its stored NDCG@10
    index_recall_floor: float = 0.9  # below this recall@10 at the largest ef, score exactly
    metrics_port: int = 0           # Prometheus /metrics port; 0 = off
    engine: str = "implicit"        # where factors are fitted: "implicit" (this process) or
                                    # "spark" (Spark MLlib; ALS only); a tenant may override it
    spark: SparkConfig = field(default_factory=SparkConfig)  # the Spark engine's session
    tune_every_rounds: int = 0      # hyperparameter search (batch/tuning.py) before every n-th
                                    # round of a tenant, the first included; 0 = only `recsys-stream tune`
    tune_trials: int = 40           # trials per search (tenant, engine, algorithm); the first is the config's
                                    # (30 left Spark at 0.963x implicit on MovieLens, 40 0.991x)
    tune_budget_s: float = 600.0    # wall-clock budget per search: no trial starts after it
    tune_als_factors: tuple[int, int] = (32, 128)          # search bounds of ALS's latent dimension
                                    # (below 32 won validation but lost the test on MovieLens)
    tune_als_regularization: tuple[float, float] = (1e-3, 100.0)  # of ALS's lambda (log scale;
                                    # the Spark engine's regParam x count has its optimum far lower)
    tune_spark_als_regularization: tuple[float, float] = (0.01, 1.0)  # of ALS's lambda on an
                                    # engine that scales it by each user's / item's count (Spark's
                                    # regParam; log scale): decades below the unscaled optimum
    tune_alpha: tuple[float, float] = (0.1, 40.0)          # of the confidence alpha (ALS only)
    tune_bpr_learning_rate: tuple[float, float] = (5e-4, 0.1)   # of BPR's SGD step (log scale)
    tune_bpr_regularization: tuple[float, float] = (1e-5, 0.1)  # of BPR's L2 (log scale)
    tune_bpr_iterations: tuple[int, int] = (20, 300)       # of BPR's epochs

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise ValueError(f"config trainer.engine must be one of {ENGINES}, "
                             f"got {self.engine!r}")


@dataclass(frozen=True)
class ServerConfig:
    address: str = "127.0.0.1:50051"  # gRPC listen address
    metrics_port: int = 0             # Prometheus /metrics port; 0 = off
    max_k: int = 1000                 # largest k a request may ask for
    max_excludes: int = 1000          # most exclude_item_ids a request may carry
    max_id_bytes: int = 256           # longest user / item id
    trending_half_life_s: float = 3600.0  # an interaction this old counts half in trending
    trending_backfill: int = 50_000   # interactions per partition replayed into trending at start
    profile_dir: str = "var/server-profiles"  # RocksDB of the profiles, rebuilt at start
    tls_cert: str = ""                # PEM certificate chain of the server; "" = plaintext
    tls_key: str = ""                 # PEM private key of tls_cert
    tls_client_ca: str = ""           # PEM CA bundle: clients must present a certificate it signed
                                      # (mutual TLS); "" = no client certificate asked
    served_log: bool = True           # every answer onto `recommendations` (the online stage's input)
    served_log_capacity: int = 10_000  # answers queued for the producer; past it they are dropped
                                      # (counted), never blocking a request

    def __post_init__(self) -> None:
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ValueError("config server.tls_cert and server.tls_key go together")
        if self.tls_client_ca and not self.tls_cert:
            raise ValueError("config server.tls_client_ca needs server.tls_cert and tls_key")


@dataclass(frozen=True)
class Config:
    model_store: str = "var/models"   # root of the versioned model store
    kafka: KafkaConfig = field(default_factory=KafkaConfig)
    worker: WorkerConfig = field(default_factory=WorkerConfig)
    items: ItemsConfig = field(default_factory=ItemsConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    server: ServerConfig = field(default_factory=ServerConfig)
    online: OnlineConfig = field(default_factory=OnlineConfig)  # the online-evaluation stage
    tenants: dict[str, TenantConfig] = field(default_factory=dict)  # tenant name -> settings

    @property
    def topics(self) -> Topics:
        return Topics(self.kafka.topic_prefix)

    def engine_of(self, tenant: str) -> str:
        """The training engine of ``tenant``: its own ``engine``, else ``trainer.engine``."""
        return self.tenant(tenant).engine or self.trainer.engine

    def tenant(self, name: str) -> TenantConfig:
        try:
            return self.tenants[name]
        except KeyError:
            raise KeyError(f"unknown tenant {name!r}") from None

    def replace(self, **sections: Any) -> Config:
        """A copy with whole sections or nested keys replaced, e.g. ``kafka={"topic_prefix": "t1-"}``."""
        changes = {}
        for name, value in sections.items():
            cur = getattr(self, name)
            changes[name] = dataclasses.replace(cur, **value) if isinstance(value, dict) \
                and dataclasses.is_dataclass(cur) else value
        return dataclasses.replace(self, **changes)


def hash_key(api_key: str) -> str:
    """sha256 hex of an API key, as stored in ``api_key_sha256``."""
    return hashlib.sha256(api_key.encode()).hexdigest()


def _build(cls, data: dict, where: str):
    if not isinstance(data, dict):
        raise ValueError(f"config {where}: expected a table, got {type(data).__name__}")
    hints = get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise ValueError(f"config {where}: unknown keys {sorted(unknown)}")
    kw = {}
    for name, value in data.items():
        t = hints[name]
        if dataclasses.is_dataclass(t):
            kw[name] = _build(t, value, f"{where}.{name}")
        elif name == "tenants":
            kw[name] = {tn: _build(TenantConfig, tv, f"tenants.{tn}") for tn, tv in value.items()}
        elif isinstance(value, list):
            kw[name] = tuple(value)
        else:
            kw[name] = value
    return cls(**kw)


def load_config(path: str | os.PathLike | None = None, env: dict | None = None) -> Config:
    """Read ``path`` (TOML) over the defaults, then apply environment overrides."""
    env = os.environ if env is None else env
    data: dict = {}
    if path is not None:
        with open(Path(path), "rb") as f:
            data = tomllib.load(f)
    cfg = _build(Config, data, "root")
    if env.get("KAFKA_BOOTSTRAP_SERVERS"):
        cfg = cfg.replace(kafka={"bootstrap_servers": env["KAFKA_BOOTSTRAP_SERVERS"]})
    return cfg
