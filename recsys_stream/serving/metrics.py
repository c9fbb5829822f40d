"""Prometheus series of the gRPC server."""

from functools import lru_cache

from prometheus_client import Counter, Gauge, Histogram

REQUESTS = Counter("recsys_server_requests_total", "Requests by method, status and source",
                   ["method", "status", "source"])
LATENCY = Histogram("recsys_server_request_seconds",
                    "Request latency by method, status and source", ["method", "status", "source"],
                    buckets=(.0005, .001, .002, .005, .01, .025, .05, .1, .25, .5, 1))
FALLBACKS = Counter("recsys_server_fallback_total",
                    "Answers not served from a nearline vector, by source", ["tenant", "source"])
# suppression rate = suppressed / (suppressed + answered): the share of the ranked candidates
# that suppression took out of the answers
SUPPRESSED = Counter("recsys_server_suppressed_items_total",
                     "Ranked candidates dropped from answers as seen, hidden, banned or excluded",
                     ["tenant"])
ANSWERED = Counter("recsys_server_answered_items_total", "Items returned in answers", ["tenant"])
MODEL_VERSION = Gauge("recsys_server_model_version", "Live model version",
                      ["tenant", "algorithm"])
MODEL_CREATED = Gauge("recsys_server_model_created_seconds",
                      "Creation time of the live model (model age = time() - this)",
                      ["tenant", "algorithm"])
SWAPS = Counter("recsys_server_model_swaps_total", "Models swapped in", ["tenant", "algorithm"])
REJECTIONS = Counter("recsys_server_model_rejections_total",
                     "Announced models that failed verification and were not served",
                     ["tenant", "algorithm"])
# New items (the item fold-in's delta beside each snapshot, serving.item_delta)
NEW_ITEM_VECTORS = Gauge("recsys_server_new_item_vectors",
                         "New-item vectors of the newest model version (the delta's size)",
                         ["tenant", "algorithm"])
NEW_ITEM_FIRST_SOLVED = Gauge("recsys_server_new_item_oldest_solved_seconds",
                              "When the delta's oldest new-item vector was first solved "
                              "(its age = time() - this)", ["tenant", "algorithm"])
NEW_ITEM_ANSWERS = Counter("recsys_server_new_item_answers_total",
                           "Recommend answers holding at least one new item", ["tenant"])
RECOMMEND_ANSWERS = Counter("recsys_server_recommend_answers_total",
                            "Recommend answers (the denominator of the new-item share)",
                            ["tenant"])


# The served log (serving.served_log): answers onto `recommendations` for the online stage
SERVED_LOGGED = Counter("recsys_served_log_total",
                        "Answers handed to the producer of the recommendations topic", ["tenant"])
SERVED_DROPPED = Counter("recsys_served_log_dropped_total",
                         "Answers not logged, never failing the request: the queue was full or "
                         "the producer's buffer (the broker away)", ["tenant", "why"])


@lru_cache(maxsize=4096)
def child(metric, *values: str):
    """``metric.labels(*values)``, memoised: the request path's label sets are few and fixed
    (methods, status codes, sources, configured tenants) and ``labels`` costs a lock and a dict
    build per call."""
    return metric.labels(*values)
