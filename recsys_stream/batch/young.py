"""The young slice of a published version (``contracts.young_slice``), from its engine's data.

Written beside the factors for the algorithms whose items the item stage re-solves (ALS, BPR):
the items of the full split with fewer than the tenant's ``young_item_users`` training users
(``TenantRound.pop_full`` counts distinct users) and their columns of the confidence matrix the
factors were fitted on, so that the stage's first solve of such an item equals the trainer's
own item step.
"""

from __future__ import annotations

from recsys_stream.batch.algorithms import Factors
from recsys_stream.batch.engines.base import Engine, TenantRound
from recsys_stream.contracts.young_slice import YoungSlice, young_rows

ALGORITHMS = ("als", "bpr")  # mf's items are not re-solved nearline (its own ridge step)


def training_slice(engine: Engine, rnd: TenantRound, factors: Factors,
                   threshold: int) -> YoungSlice | None:
    """The young items of ``factors`` (fitted on ``rnd``'s full split) with their columns;
    None for an algorithm the stage does not re-solve or with young items off (0)."""
    if factors.algorithm not in ALGORITHMS or threshold <= 0:
        return None
    rows = young_rows(rnd.pop_full, threshold)
    if not len(rows):
        return YoungSlice.empty()
    return YoungSlice.from_columns(rows, engine.item_columns(rnd, rows, factors))
