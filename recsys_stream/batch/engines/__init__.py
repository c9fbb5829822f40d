"""Training engines: where a round's factors are fitted (``trainer.engine``, per tenant
``engine``). The trainer (``batch.app``) sees only :class:`~.base.Engine` and
:class:`~.base.TenantRound`:

- ``implicit`` (:mod:`.local`): data and fit in this process, ALS and BPR by ``implicit``;
- ``spark`` (:mod:`.spark`): Spark tasks read the data, Spark MLlib fits ALS (no BPR).
"""

from __future__ import annotations

from recsys_stream.batch.engines.base import Engine, TenantRound
from recsys_stream.config import Config

__all__ = ["Engine", "TenantRound", "make_engine"]


def make_engine(name: str, cfg: Config, changelog=None) -> Engine:
    """The engine called ``name`` ("implicit" or "spark"); Spark is imported only when used.
    ``changelog``: the implicit engine's ``batch.data.ChangelogReader``, kept between rounds."""
    if name == "implicit":
        from recsys_stream.batch.engines.local import ImplicitEngine
        return ImplicitEngine(cfg, changelog)
    if name == "spark":
        from recsys_stream.batch.engines.spark import SparkEngine
        return SparkEngine(cfg)
    raise ValueError(f"unknown training engine {name!r}")
