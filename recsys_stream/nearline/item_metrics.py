"""Prometheus series of the item fold-in stage (and of the worker's item feed)."""

from prometheus_client import Counter, Gauge, Histogram

ITEM_RECORDS = Counter("recsys_items_records_total",
                       "item-interactions records consumed by the stage, by outcome",
                       ["outcome"])  # applied | unchanged (replayed, stale, over the user bound)
ITEM_DLQ = Counter("recsys_items_dlq_total", "Stage records sent to the dead-letter topic",
                   ["reason"])
VECTORS_PUBLISHED = Counter("recsys_items_vectors_published_total",
                            "New-item vectors solved and published", ["tenant"])
EVENT_TO_VECTOR = Histogram("recsys_items_event_to_vector_seconds",
                            "Event timestamp to the new item's vector handed to the producer",
                            buckets=(.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30))
ITEM_INTERACTIONS = Counter("recsys_worker_item_interactions_total",
                            "Records the worker emitted to item-interactions (events on items "
                            "its model version does not know, or knows as young)", ["tenant"])
WORKER_NEW_ITEMS = Gauge("recsys_worker_new_items",
                         "New items' vectors the worker's user fold-in includes",
                         ["tenant", "algorithm"])
YOUNG_SEEDED = Counter("recsys_items_young_seeded_total",
                       "Young items seeded from their version's training users (once per item "
                       "and version)", ["tenant"])
WORKER_YOUNG_ITEMS = Gauge("recsys_worker_young_items",
                           "Young items whose re-solved vectors replace their rows in the worker's "
                           "user fold-in", ["tenant", "algorithm"])
