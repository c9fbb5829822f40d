"""The implicit engine: the whole tenant in this process, factors by ``implicit``
(``batch.algorithms``: ALS and BPR)."""

from __future__ import annotations

import logging
import time

import numpy as np
from tqdm import tqdm

from recsys_stream.batch.algorithms import TRAINERS, Factors
from recsys_stream.batch.data import ChangelogReader, TenantData, build_matrix, from_events, \
    from_histories, iter_events_file
from recsys_stream.batch.engines.base import Engine, TenantRound
from recsys_stream.batch.evaluate import sample_users
from recsys_stream.config import Config

log = logging.getLogger(__name__)


class ImplicitEngine(Engine):
    """Reads the changelog (or file) here, builds the CSR matrices here, fits with ``implicit``;
    lambda is not scaled."""

    name = "implicit"
    regularization_scaling = "none"
    algorithms = ("als", "bpr", "mf")  # mf: batch/explicit.py, on this process's TenantData

    def __init__(self, cfg: Config, changelog: ChangelogReader | None = None) -> None:
        self.cfg = cfg
        # a periodic trainer passes the same reader each round: it reads only what is new
        self.changelog = changelog or ChangelogReader(cfg)

    def load(self, cfg: Config, tenants: list[str], events_file: str | None,
             file_tenant: str | None = None, progress: bool = False) -> list[TenantRound]:
        return [self.round(cfg, d)
                for d in self.load_data(cfg, tenants, events_file, file_tenant, progress,
                                        self.changelog)]

    @staticmethod
    def load_data(cfg: Config, tenants: list[str], events_file: str | None,
                  file_tenant: str | None = None, progress: bool = False,
                  changelog: ChangelogReader | None = None) -> list[TenantData]:
        """Every tenant's histories and holdout, in memory (``batch.data``); ``changelog``: the
        reader kept between rounds (a fresh one, reading from the start, by default)."""
        frac = cfg.trainer.holdout_fraction
        if events_file:
            t0 = time.perf_counter()
            events = list(tqdm(iter_events_file(events_file, tenant=file_tenant),
                               desc="events file", unit="event", disable=not progress))
            log.info("read %d events from %s in %.1fs", len(events), events_file,
                     time.perf_counter() - t0)
            return [from_events(t, events, cfg.tenant(t).confidence,
                                cfg.tenant(t).history_cap, frac) for t in tenants]
        by_tenant = (changelog or ChangelogReader(cfg)).read(progress=progress)
        unknown = set(by_tenant) - set(cfg.tenants)
        if unknown:
            log.warning("changelog holds unconfigured tenants %s: ignored", sorted(unknown))
        return [from_histories(t, by_tenant.get(t, {}), frac) for t in tenants]

    def round(self, cfg: Config, data: TenantData) -> TenantRound:
        """A round over a tenant's ``TenantData`` (every user's histories in memory)."""
        settings = cfg.tenant(data.tenant).confidence
        train = build_matrix(data.train, settings)
        full = build_matrix(data.histories, settings)
        test = sample_users(data.test_items, cfg.trainer.eval_max_users, cfg.trainer.seed)
        return TenantRound(
            data.tenant, train.user_ids, train.item_ids, full.user_ids, full.item_ids,
            train.popularity, full.popularity, eval=train,
            eval_rows=np.arange(len(train.user_ids)), test=test, data=data,
            n_events=data.n_events, event_count=data.event_count,
            window=(int(data.window[0]), int(data.window[1])), train_nnz=train.C.nnz,
            handle={"train": train.C, "full": full.C})

    def fit(self, rnd: TenantRound, split: str, algorithm: str, hp, seed: int,
            progress: bool = False) -> Factors:
        return TRAINERS[algorithm](rnd.handle[split], hp, seed, progress)

    def item_columns(self, rnd: TenantRound, rows: np.ndarray, factors: Factors):
        return rnd.handle["full"].tocsc()[:, np.asarray(rows, np.int64)]
