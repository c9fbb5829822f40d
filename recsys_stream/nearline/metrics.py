"""Prometheus series of the nearline worker (one registry per process)."""

from prometheus_client import Counter, Gauge, Histogram

EVENTS = Counter("recsys_worker_events_total", "Interaction records consumed, by outcome",
                 ["outcome"])  # applied | duplicate | replayed | invalid
DLQ = Counter("recsys_worker_dlq_total", "Records sent to the dead-letter topic, by reason",
              ["reason"])
BATCH_SIZE = Histogram("recsys_worker_batch_size", "Records per micro-batch",
                       buckets=(1, 10, 50, 100, 500, 1000, 2000, 5000, 10000, 20000))
BATCH_SECONDS = Histogram("recsys_worker_batch_seconds",
                          "Time to process one micro-batch, decode to profiles produced",
                          buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5))
COMMIT_SECONDS = Histogram("recsys_worker_commit_seconds",
                           "Time the loop spent on one commit: phase 1 (states encoded, "
                           "changelog produced) and phase 2 (the RocksDB write); the broker's "
                           "acknowledgements between them are waited for off the loop",
                           buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5))
COMMIT_PHASE_SECONDS = Histogram("recsys_worker_commit_phase_seconds",
                                 "Time of one commit's phase: encode (states encoded and the "
                                 "changelog produced; on the loop), acks (until the broker "
                                 "acknowledged everything produced before; off the loop), "
                                 "store (the RocksDB write; on the loop)",
                                 ["phase"],
                                 buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1,
                                          2.5, 5))
FOLDIN_SECONDS = Histogram("recsys_worker_foldin_seconds",
                           "Fold-in time of one tenant/algorithm of a micro-batch",
                           buckets=(.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1))
EVENT_TO_PROFILE = Histogram("recsys_worker_event_to_profile_seconds",
                             "Event timestamp to its profile handed to the producer",
                             buckets=(.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30))
LAG = Gauge("recsys_worker_consumer_lag", "Records behind the end of an interactions partition",
            ["partition"])
MODEL_VERSION = Gauge("recsys_worker_model_version", "Model version the worker folds into",
                      ["tenant", "algorithm"])
USERS_RESOLVED = Counter("recsys_worker_users_resolved_total",
                         "Users re-solved in the background after a new model version")
PROFILES = Counter("recsys_worker_profiles_total",
                   "Updated users' profiles, by outcome: published, or unchanged (not sent: the "
                   "vectors moved by float noise only and the ids are the same)", ["outcome"])
