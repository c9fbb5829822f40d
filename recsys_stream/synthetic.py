"""Synthetic interaction streams with latent structure and popularity skew (no downloads).

Each tenant has its own catalogue and users. Items belong to latent "genres" and have a
Zipf-distributed popularity; each user prefers one or two genres. A user's next item is drawn
with probability proportional to ``popularity * exp(affinity)``, so a factor model can learn
the structure and beats popularity, while popularity is still a fair cold-start answer.
"""

from __future__ import annotations

from dataclasses import dataclass

import zlib

import numpy as np

from recsys_stream.contracts.events import Event
from recsys_stream.contracts.pb import events_pb2

_TYPES = np.array(["view", "view", "view", "click", "click", "add_to_cart", "purchase", "like"])


@dataclass(frozen=True)
class TenantWorld:
    """The hidden structure of one tenant's synthetic data."""

    tenant: str
    item_ids: np.ndarray
    item_genre: np.ndarray
    popularity: np.ndarray  # sampling weights, sum to 1
    genres: int

    def sample_items(self, rng: np.random.Generator, genre_pref: np.ndarray, n: int) -> np.ndarray:
        """Item rows for a user with genre preference weights ``genre_pref`` (len = genres)."""
        w = self.popularity * np.exp(3.0 * genre_pref[self.item_genre])
        return rng.choice(len(self.item_ids), size=n, p=w / w.sum())


def make_world(tenant: str, n_items: int, genres: int = 8, seed: int = 0) -> TenantWorld:
    rng = np.random.default_rng(zlib.crc32(f"{tenant}/{seed}".encode()))  # stable across processes
    ranks = rng.permutation(n_items) + 1
    pop = 1.0 / ranks ** 0.9
    # item ids are shared across tenants on purpose: isolation must not depend on distinct ids
    return TenantWorld(tenant, np.array([f"item-{i}" for i in range(n_items)]),
                       rng.integers(0, genres, n_items), pop / pop.sum(), genres)


def user_preference(rng: np.random.Generator, genres: int) -> np.ndarray:
    pref = np.zeros(genres)
    pref[rng.choice(genres, size=2, replace=False)] = [1.0, 0.6]
    return pref


def generate_events(world: TenantWorld, n_users: int, events_per_user: int, start_ms: int,
                    seed: int = 0, user_prefix: str = "user-", span_ms: int = 30 * 86_400_000
                    ) -> list[Event]:
    """Events of ``n_users`` users spread over ``span_ms`` after ``start_ms``, sorted by time."""
    rng = np.random.default_rng(seed)
    out = []
    for u in range(n_users):
        pref = user_preference(rng, world.genres)
        n = max(1, int(rng.poisson(events_per_user)))
        rows = world.sample_items(rng, pref, n)
        times = np.sort(start_ms + rng.integers(0, span_ms, n))
        types = rng.choice(_TYPES, n)
        uid = f"{user_prefix}{u}"
        for j, (r, t, ty) in enumerate(zip(rows, times, types)):
            out.append(Event(f"{world.tenant}-{uid}-{seed}-{j}", world.tenant, uid,
                             str(world.item_ids[r]), str(ty), None, int(t)))
    out.sort(key=lambda e: e.timestamp_ms)
    return out


def catalog_items(world: TenantWorld) -> list[events_pb2.CatalogItem]:
    """The world's items as catalog records with their genre as category ``genre-<g>``."""
    return [events_pb2.CatalogItem(tenant=world.tenant, item_id=str(i), state=events_pb2.AVAILABLE,
                                   categories=[f"genre-{g}"])
            for i, g in zip(world.item_ids, world.item_genre)]


def genre_of(world: TenantWorld, item_id: str) -> int:
    return int(world.item_genre[int(item_id.rsplit("-", 1)[1])])


# -- a catalogue that churns (issue 19's benchmark) ---------------------------------------------
DAY_MS = 86_400_000


@dataclass(frozen=True)
class ChurningWorld:
    """Items that launch continuously, users whose tastes stay put.

    Item ``i`` launches at ``launch_day[i]`` (the initial catalogue at days in ``[-60, 0)``, then
    ``launches_per_day`` new items each day) with a genre and a Zipf base popularity; its
    attractiveness on day ``t`` follows a launch-popularity curve::

        pop_i(t) = base_i * (evergreen + boost * exp(-(t - launch_i) / half_life * ln 2))

    for ``t >= launch_i`` (0 before): a new release is most popular at launch and settles to
    its evergreen level. A user's next item is drawn with probability proportional to
    ``pop_i(t) * exp(3 * pref_u[genre_i])`` over the items launched so far, as in
    :class:`TenantWorld`.
    """

    item_genre: np.ndarray
    base: np.ndarray
    launch_day: np.ndarray
    genres: int
    boost: float
    evergreen: float
    half_life_days: float

    @property
    def n_items(self) -> int:
        return len(self.base)

    def item_id(self, i: int) -> str:
        return f"item-{i}"

    def popularity(self, day: float) -> np.ndarray:
        age = day - self.launch_day
        curve = self.evergreen + self.boost * np.exp2(-np.maximum(age, 0) / self.half_life_days)
        return np.where(age >= 0, self.base * curve, 0.0)


def make_churning_world(initial_items: int, launches_per_day: int, days: int, genres: int = 12,
                        boost: float = 4.0, evergreen: float = 0.3, half_life_days: float = 3.0,
                        seed: int = 0) -> ChurningWorld:
    """The initial catalogue plus ``days`` of daily launches (launch times uniform in a day)."""
    rng = np.random.default_rng(seed)
    n = initial_items + launches_per_day * days
    launch = np.concatenate([rng.uniform(-60, 0, initial_items),
                             np.repeat(np.arange(days), launches_per_day)
                             + rng.uniform(0, 1, launches_per_day * days)])
    base = 1.0 / (rng.permutation(n) + 1) ** 0.9
    return ChurningWorld(rng.integers(0, genres, n), base / base.sum(), launch, genres, boost,
                         evergreen, half_life_days)


def churning_events(world: ChurningWorld, n_users: int, days: int, active_share: float = 0.3,
                    events_per_active_day: float = 3.0, taste: float = 3.0, seed: int = 0
                    ) -> list[tuple[int, int, int]]:
    """``(user, item, timestamp_ms)`` of ``n_users`` users over ``days`` days, sorted by time.

    Each day a user is active with probability ``active_share`` and then draws
    ``1 + Poisson(events_per_active_day - 1)`` items (never one they met before) at times
    uniform in the day, with probability ``pop_i(t) * exp(taste * pref_u[genre_i])``; tastes
    (``user_preference``) never change.
    """
    rng = np.random.default_rng(seed)
    prefs = np.stack([user_preference(rng, world.genres) for _ in range(n_users)])
    affinity = np.exp(taste * prefs)  # (users, genres)
    seen: list[set[int]] = [set() for _ in range(n_users)]
    out = []
    for day in range(days):
        for u in np.flatnonzero(rng.random(n_users) < active_share):
            t = day + np.sort(rng.uniform(0, 1, 1 + rng.poisson(events_per_active_day - 1)))
            for ti in t:
                w = world.popularity(ti) * affinity[u][world.item_genre]
                if seen[u]:
                    w[list(seen[u])] = 0.0
                i = int(rng.choice(world.n_items, p=w / w.sum()))
                seen[u].add(i)
                out.append((int(u), i, int(ti * DAY_MS)))
    out.sort(key=lambda e: e[2])
    return out
def generate_ratings(tenant: str, n_users: int = 80, n_items: int = 60, rank: int = 3,
                     density: float = 0.5, seed: int = 0,
                     start_ms: int = 1_700_000_000_000) -> list[Event]:
    """Explicit ratings of a low-rank world: ``3.4 + b_u + b_i + u·v + noise`` rounded to halves
    on 0.5..5, users ``u<n>`` and items ``i<n>``, each user's in time order (shuffled overall)."""
    rng = np.random.default_rng(seed)
    U, V = rng.normal(0, 0.7, (n_users, rank)), rng.normal(0, 0.7, (n_items, rank))
    bu, bi = rng.normal(0, 0.4, n_users), rng.normal(0, 0.4, n_items)
    events, t = [], start_ms
    for u in range(n_users):
        for i in np.flatnonzero(rng.random(n_items) < density):
            r = 3.4 + bu[u] + bi[i] + U[u] @ V[i] + rng.normal(0, 0.3)
            r = float(np.clip(np.round(r * 2) / 2, 0.5, 5.0))
            t += int(rng.integers(1, 60_000))
            events.append(Event(f"e{u}-{i}", tenant, f"u{u}", f"i{i}", "rating", r, t))
    rng.shuffle(events)
    return events
