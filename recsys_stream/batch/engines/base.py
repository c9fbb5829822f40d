"""What the trainer holds of a tenant's round, whichever engine fits the factors.

An engine (:class:`Engine`) does two things: it loads the tenants' data into
:class:`TenantRound` s, and it fits an algorithm on a round's ``"train"`` or ``"full"`` split,
returning ``algorithms.Factors`` aligned with the round's ids. Everything else of a round - the
popularity baseline, evaluation of a user sample, the comparison with the current model, gates,
index build, publishing - is the trainer's (``batch.app.train_tenant``), on the driver, with
the factors the engine produced. So the round carries, besides the ids and popularity of both
splits, only the evaluated users' train rows (``eval``) and, for the comparison with the current
model, their train histories (``data``): the implicit engine hands the whole tenant over, the
Spark engine only the sampled users.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from recsys_stream.batch.algorithms import Factors
from recsys_stream.batch.data import Matrix, TenantData
from recsys_stream.config import Config


@dataclass
class TenantRound:
    """One tenant's data as the trainer needs it.

    Attributes
    ----------
    tenant : str
    train_users, train_items : row and column ids of the train split (sorted); the evaluated
        model's factors follow them
    full_users, full_items : the same of all data; the published model's factors follow them
    pop_train, pop_full : users per item of each split, aligned with its items
    eval : Matrix
        Train rows of the evaluated users over ``train_items`` (seen items are excluded from
        their rankings); ``eval_rows[n]`` is the row of ``eval.user_ids[n]`` in ``train_users``.
    test : dict of user id to set of item ids, the evaluated (sampled) test users
    data : TenantData
        Train histories, test items and times of at least the evaluated users (for
        ``compare.compare_with_current``); ``data.test_items`` is the population the user
        sample was drawn from
    n_events, event_count, window : events in the data, events the histories absorbed, and
        the event-time range (ms)
    handle : engine-specific (the implicit engine's matrices, the Spark engine's DataFrames)
    """

    tenant: str
    train_users: list[str]
    train_items: list[str]
    full_users: list[str]
    full_items: list[str]
    pop_train: np.ndarray
    pop_full: np.ndarray
    eval: Matrix
    eval_rows: np.ndarray
    test: dict[str, set[str]]
    data: TenantData
    n_events: int
    event_count: int
    window: tuple[int, int]
    train_nnz: int = 0
    handle: Any = field(default=None, repr=False)

    @property
    def empty(self) -> bool:
        return not self.full_users


class Engine(ABC):
    """Where the factors of a round are fitted.

    Attributes
    ----------
    name : "implicit" or "spark", written to the manifest as ``engine``
    regularization_scaling : "none" or "count", written to the manifest; the fold-ins weight
        lambda by the user's item count when "count"
    algorithms : the algorithms the engine can fit
    """

    name: str
    regularization_scaling: str
    algorithms: tuple[str, ...]

    @abstractmethod
    def load(self, cfg: Config, tenants: list[str], events_file: str | None,
             file_tenant: str | None = None, progress: bool = False) -> list[TenantRound]:
        """The rounds of ``tenants`` from the state changelog, or from ``events_file``
        (``file_tenant``: the tenant of a MovieLens file, the default of a missing column)."""

    @abstractmethod
    def fit(self, rnd: TenantRound, split: str, algorithm: str, hp, seed: int,
            progress: bool = False) -> Factors:
        """Fit ``algorithm`` on ``split`` ("train" or "full") of ``rnd``; the factors' rows
        follow ``rnd.train_users`` / ``rnd.full_users`` and ``..._items``."""

    @abstractmethod
    def item_columns(self, rnd: TenantRound, rows: np.ndarray, factors: Factors):
        """The full split's confidences ``c`` of the items at ``rows`` of ``rnd.full_items``:
        a sparse (len(full_users) x len(rows)) matrix, in the convention of the fold-ins
        (``c = 1 + alpha*log1p(strength)``, whatever the engine itself was handed);
        ``factors``: the full split's fit (its hyperparameters name its alpha)."""

    @property
    def record_key(self) -> str:
        """The name the tenant's tuning record files this engine's searches under."""
        return self.name

    def release(self, rnd: TenantRound) -> None:
        """Free what the engine holds for ``rnd`` (the round is done)."""

    def close(self) -> None:
        """Free the engine's resources (end of the trainer's round)."""

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
