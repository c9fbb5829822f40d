"""Experiments: which arm a user (or an anonymous session) is in, the same on every server.

DESIGN.md, "Online evaluation and experiments": arms are assigned by a stable hash of
(experiment, user) into ``BUCKETS`` buckets, and arms own contiguous ranges of buckets in config
order. So a user keeps their arm across restarts and servers (no state, no coordination), a
share moved from one arm to the next moves only the users at the boundary, and two experiments
of one tenant split users independently of each other (the experiment's name is in the hash).

Config (per tenant, an array of tables)::

    [[tenants.acme.experiments]]
    name = "als-vs-popularity"
    arms = [{ name = "control", share = 0.5 },
            { name = "popularity", share = 0.5, algorithm = "popularity" }]

The first arm is the control the report compares every other arm with. Shares are fractions of
all users; the buckets past the last arm's range are not in the experiment.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass

BUCKETS = 10_000
# what an arm may change (the server applies it; an empty value leaves the tenant's setting)
ARM_KEYS = ("name", "share", "algorithm", "exploration_share", "max_per_category", "mmr_lambda",
            "model_version")


@dataclass(frozen=True)
class Arm:
    """One arm: its traffic share and what it changes for its users.

    Attributes
    ----------
    name : str
    share : float
        Fraction of all users (0 < share <= 1).
    algorithm : str
        Served algorithm ("als", "bpr", or "popularity": the baseline without a user vector);
        "" = the tenant's default.
    exploration_share, mmr_lambda : float, optional
    max_per_category : int, optional
        Overrides of the tenant's exploration share and the request's diversity; None = as is.
    model_version : int
        A pinned model version of the arm's algorithm, served while the store keeps it (else
        the current one, counted: ``serving.pinned``); 0 = the current version.
    """

    name: str
    share: float
    algorithm: str = ""
    exploration_share: float | None = None
    max_per_category: int | None = None
    mmr_lambda: float | None = None
    model_version: int = 0


@dataclass(frozen=True)
class Experiment:
    """A named split of a tenant's users into arms; ``arms[0]`` is the control."""

    name: str
    arms: tuple[Arm, ...]

    def __post_init__(self) -> None:
        where = f"experiment {self.name!r}"
        if not self.name or not self.name.isprintable():
            raise ValueError(f"{where}: a name of printable characters is required")
        if len(self.arms) < 2:
            raise ValueError(f"{where}: at least two arms (a control and one more)")
        names = [a.name for a in self.arms]
        if len(set(names)) != len(names) or not all(names):
            raise ValueError(f"{where}: arm names must be unique and non-empty, got {names}")
        for a in self.arms:
            if a.algorithm not in ("", "als", "bpr", "popularity"):
                raise ValueError(f"{where} arm {a.name!r}: algorithm must be als, bpr or "
                                 f"popularity (or empty), got {a.algorithm!r}")
            if not isinstance(a.model_version, int) or a.model_version < 0:
                raise ValueError(f"{where} arm {a.name!r}: model_version must be a version "
                                 f"number (0 = current), got {a.model_version!r}")
            if not 0 < a.share <= 1:
                raise ValueError(f"{where} arm {a.name!r}: share must be in (0, 1], "
                                 f"got {a.share}")
        if self.total_buckets() > BUCKETS:
            raise ValueError(f"{where}: arm shares add up to more than 1 "
                             f"({sum(a.share for a in self.arms):g})")

    @property
    def control(self) -> Arm:
        return self.arms[0]

    def ranges(self) -> list[tuple[Arm, int, int]]:
        """Each arm with its bucket range ``[start, end)``, contiguous in config order."""
        out, start = [], 0
        for a in self.arms:
            end = start + round(a.share * BUCKETS)
            out.append((a, start, end))
            start = end
        return out

    def total_buckets(self) -> int:
        return sum(round(a.share * BUCKETS) for a in self.arms)

    def assign(self, unit_id: str) -> Arm | None:
        """The arm of a user (or session) id; None when its bucket is outside every arm."""
        b = bucket(self.name, unit_id)
        for arm, start, end in self.ranges():
            if start <= b < end:
                return arm
        return None


def bucket(experiment: str, unit_id: str) -> int:
    """The stable bucket of ``unit_id`` in ``experiment``: blake2b of both, mod ``BUCKETS``.

    A cryptographic hash, not Python's ``hash`` (salted per process) nor a short CRC: buckets
    must agree across processes and releases, and be independent between experiments.
    """
    digest = hashlib.blake2b(f"{experiment}\x1f{unit_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % BUCKETS


def parse_experiments(raw, where: str = "experiments") -> tuple[Experiment, ...]:
    """Experiments from config tables (``[[tenants.T.experiments]]``), validated.

    Raises
    ------
    ValueError
        Naming the experiment and the key at fault.
    """
    out = []
    for n, table in enumerate(raw or ()):
        if isinstance(table, Experiment):
            out.append(table)
            continue
        if not isinstance(table, Mapping) or set(table) - {"name", "arms"}:
            raise ValueError(f"config {where}[{n}]: expected a table with name and arms, "
                             f"got {table!r}")
        arms = []
        for m, arm in enumerate(table.get("arms", ())):
            unknown = set(arm) - set(ARM_KEYS) if isinstance(arm, Mapping) else {"?"}
            if unknown or "name" not in arm or "share" not in arm:
                raise ValueError(f"config {where}[{n}].arms[{m}]: needs name and share, may set "
                                 f"{ARM_KEYS[2:]}; unknown {sorted(unknown)}")
            arms.append(Arm(**arm))
        try:
            out.append(Experiment(str(table.get("name", "")), tuple(arms)))
        except ValueError as e:
            raise ValueError(f"config {where}[{n}]: {e}") from None
    names = [e.name for e in out]
    if len(set(names)) != len(names):
        raise ValueError(f"config {where}: experiment names must be unique, got {names}")
    return tuple(out)
