"""Prometheus series of the trainer (all prefixed ``recsys_trainer_``)."""

from prometheus_client import Counter, Gauge, Histogram

TRAIN_SECONDS = Histogram("recsys_trainer_train_seconds",
                          "Training time of one model (evaluated fit + published retrain)",
                          ["tenant", "algorithm"], buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1800))
NDCG = Gauge("recsys_trainer_ndcg_at_10", "Holdout NDCG@10 of the last trained model",
             ["tenant", "algorithm"])
BASELINE_NDCG = Gauge("recsys_trainer_popularity_ndcg_at_10",
                      "Holdout NDCG@10 of the popularity baseline in the last round", ["tenant"])
PUBLISHED_VERSION = Gauge("recsys_trainer_published_version", "Last published model version",
                          ["tenant", "algorithm"])
REJECTED = Counter("recsys_trainer_models_rejected_total", "Models that failed a quality gate",
                   ["tenant", "algorithm"])
RUNS = Counter("recsys_trainer_runs_total", "Training rounds per tenant, by outcome",
               ["tenant", "outcome"])  # trained | skipped | failed
LAST_ROUND = Gauge("recsys_trainer_last_round_timestamp_seconds",
                   "Unix time the tenant's last round finished (trained or skipped)", ["tenant"])
