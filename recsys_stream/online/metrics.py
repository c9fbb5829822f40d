"""Prometheus series of the online-evaluation stage (committed counts, as the report reads)."""

from prometheus_client import Counter

COUNTED = Counter("recsys_online_events_total",
                  "Impressions, clicks and conversions attributed to served answers (committed); "
                  "kind impressions_withdrawn: served impressions replaced by reported ones",
                  ["tenant", "algorithm", "version", "source", "experiment", "arm", "kind"])
ATTRIBUTED = Counter("recsys_online_positives_total",
                     "Positive events by outcome: attributed to an answer, pending (its answer "
                     "not seen yet) or organic (no answer of the user held the item)",
                     ["tenant", "outcome"])
RECORDS = Counter("recsys_online_records_total", "Records the stage consumed, by kind",
                  ["kind"])  # served | positive | other | invalid | undecodable
