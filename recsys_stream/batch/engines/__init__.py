"""Training engines: where a round's factors are fitted (``trainer.engine``, per tenant
``engine``). The trainer (``batch.app``) sees only :class:`~.base.Engine` and
:class:`~.base.TenantRound`:

- ``implicit`` (:mod:`.local`): data and fit in this process, ALS and BPR by ``implicit``;
- ``spark`` (:mod:`.spark`): Spark tasks read the data and fit ALS (no BPR): the project's
  unscaled steps (:mod:`.spark_als`) or MLlib's ``ALS`` (``trainer.spark.als_solver``).
"""

from __future__ import annotations

from recsys_stream.batch.engines.base import Engine, TenantRound
from recsys_stream.config import Config

__all__ = ["Engine", "TenantRound", "make_engine", "record_key", "spark_record_key"]


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


def record_key(cfg: Config, tenant: str) -> str:
    """The name ``tenant``'s tuning record files the searches of its configured engine under
    (``Engine.record_key`` without starting the engine)."""
    name = cfg.engine_of(tenant)
    return spark_record_key(cfg.trainer.spark.als_solver) if name == "spark" else name


def spark_record_key(solver: str) -> str:
    """The record's name of the Spark engine with ``solver``: a lambda tuned for MLlib's
    count-scaled ALS means something else to the unscaled one (records made before the
    unscaled solver existed are MLlib's, filed under "spark")."""
    return "spark" if solver == "mllib" else f"spark-{solver}"
