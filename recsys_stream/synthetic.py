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


def genre_of(world: TenantWorld, item_id: str) -> int:
    return int(world.item_genre[int(item_id.rsplit("-", 1)[1])])


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
