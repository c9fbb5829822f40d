"""Precomputed top-N per user (seed 003 §22): every user of the served version, for email and push.

``recsys-stream export`` writes, for every user of a tenant's served model version (or those
listed), the top-``k`` items that ``Recommend`` would answer for that version, as JSON lines in
the seed's shape::

    {"user_id": "u1", "model_version": 7, "generated_at": "2026-12-04T21:00:00.000Z",
     "source": "BATCH", "items": [{"item_id": "i9", "score": 0.83}, ...]}

or as Parquet (``--format parquet``, the same columns; ``items`` a list of structs). Output is
cut into shards of ``shard_users`` users, each written under a temporary name and renamed when
complete, and ``manifest.json`` is written last: per shard its file, user count, item count,
bytes and sha256. :func:`verify` re-reads the directory against it, so a shard cut short (or
missing, or altered) is detected before anything is sent.

It lives in ``serving`` because it *is* an answer of ``Recommend``, precomputed: the user's
vector is chosen by the same chain (:func:`recsys_stream.serving.recommend.user_vector`: the
profile's nearline vector of this very version, else the user's batch row, else the fold-in of
the profile's items; else the model's popularity), and scored against the same item factors.

What is suppressed, per user (a superset of what ``Recommend`` suppresses, equal to it whenever
the profile holds the user's training items, as the worker's profile does):

- the user's items in the training data (``--events-file`` or the worker's state changelog):
  every item with positive evidence and every item the user hid;
- when a profile is read (the ``profiles`` topic): its ``item_ids`` and ``suppressed_item_ids``,
  and the model rows its nearline vector was solved with (``suppressed_rows``);
- the tenant's banned or removed catalog items (the ``catalog`` topic), for every user.

Users erased on ``profiles`` (a tombstone) are not exported at all (``erased_skipped`` in the
manifest): the server serves them as new users, a mailing sends them nothing. Not included,
unlike a live ``Recommend``: items launched after the version (``item-vectors``,
merged by ``serving.item_delta`` at request time) and the re-solved vectors of the version's
young items (the export scores the version's own rows), and trending (a user with no vector gets the
model's popularity, which is ``Recommend``'s own fallback when nothing trends).

Scoring is vectorised over blocks of users. ``exact``: one matrix product per block
``S = X_B Y^T`` with the suppressed entries set to ``-inf``, then ``argpartition`` for the
``k`` best (exact, the answer ``Recommend`` gives below its index threshold). ``index``: one
batched hnswlib query per block for ``max(ef, 2k)`` candidates (the model's own tuned index),
re-scored exactly, suppressed ones dropped; a user left short is scored exactly alone.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from tqdm import tqdm

from recsys_stream.contracts.ann_index import _query
from recsys_stream.contracts.model_store import ModelStore
from recsys_stream.contracts.pb import profiles_pb2, recommender_pb2
from recsys_stream.serving.recommend import user_vector
from recsys_stream.serving.snapshots import TenantSnapshot

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
FORMATS = ("jsonl", "parquet")
MODES = ("exact", "index")
# Score values per block of the exact product: 2^23 float32 = 32 MiB, whatever the catalogue
# (argpartition's int64 answer doubles it; 2^25 took the 50k x 100k benchmark to 1.7 GiB).
BLOCK_VALUES = 1 << 23
_SOURCE_NAME = {v.number: v.name for v in recommender_pb2.Source.DESCRIPTOR.values}


@dataclass
class Suppression:
    """What is hidden from each user (see the module docstring).

    ``seen``: model-user rows x model-item rows, nonzero = hidden (training items and hides);
    ``profiles``: user id -> latest profile; ``banned``: the catalog's banned/removed item ids.
    ``applied``: the sources actually read, written into the manifest.
    """

    seen: sp.csr_matrix | None = None
    profiles: dict[str, profiles_pb2.UserProfile] = field(default_factory=dict)
    erased: set[str] = field(default_factory=set)  # tombstoned on ``profiles``: not exported
    banned: frozenset[str] = frozenset()
    applied: list[str] = field(default_factory=list)


# -- reading the inputs --------------------------------------------------------------------------
def seen_matrix(snap: TenantSnapshot, histories: dict) -> sp.csr_matrix:
    """The model users' training items and hidden items as a CSR of model rows.

    ``histories``: user id -> ``UserHistory`` (``items`` and ``suppressed``), as the trainer reads
    them; items the model does not know are skipped (nothing to hide).
    """
    n_users, n_items = len(snap.user_row), len(snap.item_ids)
    indptr, indices = [0], []
    row_of = snap.item_row
    users = snap.user_row
    order = sorted(users, key=users.get)  # model row order
    for u in order:
        h = histories.get(u)
        if h is not None:
            rows = {row_of[i] for i in (*h.items, *h.suppressed) if i in row_of}
            indices.extend(sorted(rows))
        indptr.append(len(indices))
    data = np.ones(len(indices), dtype=np.bool_)
    return sp.csr_matrix((data, np.asarray(indices, np.int64), np.asarray(indptr, np.int64)),
                         shape=(n_users, n_items))


def read_profiles(cfg, tenant: str, timeout_s: float = 60.0
                  ) -> tuple[dict[str, profiles_pb2.UserProfile], set[str]]:
    """The tenant's latest profile per user from the compacted ``profiles`` topic, and the
    users erased there (a tombstone; the server marks them erased for good, as here)."""
    from recsys_stream.contracts.keys import split_key
    from recsys_stream.kafka import read_to_end
    out: dict[str, profiles_pb2.UserProfile] = {}
    erased: set[str] = set()
    for m in read_to_end(cfg, cfg.topics.profiles, timeout_s=timeout_s):
        t, user = split_key(m.key())
        if t != tenant:
            continue
        if m.value() is None:  # tombstone: the worker erased the user
            out.pop(user, None)
            erased.add(user)
        else:
            out[user] = profiles_pb2.UserProfile.FromString(m.value())
    return out, erased


def read_banned(cfg, tenant: str, timeout_s: float = 60.0) -> frozenset[str]:
    """The tenant's banned or removed items, from the ``catalog`` topic (last state wins, as the
    server's read model keeps it)."""
    from recsys_stream.contracts.keys import split_key
    from recsys_stream.contracts.pb import events_pb2
    from recsys_stream.kafka import read_to_end
    banned: set[str] = set()
    for m in read_to_end(cfg, cfg.topics.catalog, timeout_s=timeout_s):
        t, item = split_key(m.key())
        if t != tenant:
            continue
        state = events_pb2.CatalogItem.FromString(m.value() or b"").state
        if state in (events_pb2.BANNED, events_pb2.REMOVED):
            banned.add(item)
        else:
            banned.discard(item)
    return frozenset(banned)


# -- scoring -------------------------------------------------------------------------------------
def _block_vectors(snap: TenantSnapshot, users: Sequence[str], sup: Suppression):
    """Per block: the vector matrix, each user's source, the users without a vector, and the
    extra suppressed (position, row) pairs from profiles."""
    width = snap.width
    X = np.zeros((len(users), width), dtype=np.float32)
    sources = np.full(len(users), recommender_pb2.POPULARITY, dtype=np.int32)
    extra_pos: list[int] = []
    extra_rows: list[int] = []
    profiles = sup.profiles
    row_of = snap.item_row
    for j, u in enumerate(users):
        profile = profiles.get(u) if profiles else None
        if profile is None:
            r = snap.user_row.get(u)
            if r is not None:  # the chain's BATCH step, without a profile in front of it
                X[j] = snap.user_factors[r]
                sources[j] = recommender_pb2.BATCH
                continue
        x, src, vector_rows, _ = user_vector(snap, profile, u)
        if x is not None:
            X[j] = x
            sources[j] = src
        if profile is not None:
            rows = set(vector_rows)
            rows.update(r for r in map(row_of.get, profile.item_ids) if r is not None)
            rows.update(r for r in map(row_of.get, profile.suppressed_item_ids)
                        if r is not None)
            extra_pos.extend([j] * len(rows))
            extra_rows.extend(rows)
    return X, sources, np.asarray(extra_pos, np.int64), np.asarray(extra_rows, np.int64)


def _hidden_pairs(snap: TenantSnapshot, users: Sequence[str], sup: Suppression,
                  extra_pos: np.ndarray, extra_rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(block position, item row) of every suppressed entry of the block but the bans."""
    pos, rows = [extra_pos], [extra_rows]
    if sup.seen is not None:
        mrow = np.fromiter((snap.user_row.get(u, -1) for u in users), np.int64, len(users))
        have = np.flatnonzero(mrow >= 0)
        if len(have):
            sub = sup.seen[mrow[have]]
            pos.append(np.repeat(have, np.diff(sub.indptr)))
            rows.append(sub.indices.astype(np.int64))
    return np.concatenate(pos), np.concatenate(rows)


def _exact_block(Y: np.ndarray, X: np.ndarray, k: int, hidden: tuple[np.ndarray, np.ndarray],
                 banned_rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows (B, k') and scores of the ``k`` best unsuppressed items per user, best first;
    ``-inf`` marks a slot with no eligible item left."""
    S = X @ Y.T  # (B, n_items): the block's one matrix product
    np.negative(S, out=S)  # in place: the k best are the k smallest, with no copy of S
    S[hidden] = np.inf
    if len(banned_rows):
        S[:, banned_rows] = np.inf
    kk = min(k, S.shape[1])
    part = np.argpartition(S, kk - 1, axis=1)[:, :kk] if kk < S.shape[1] else \
        np.broadcast_to(np.arange(S.shape[1]), S.shape).copy()
    ps = -np.take_along_axis(S, part, axis=1)
    order = np.argsort(-ps, axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1), np.take_along_axis(ps, order, axis=1)


def _index_block(snap: TenantSnapshot, X: np.ndarray, k: int,
                 hidden: tuple[np.ndarray, np.ndarray], banned_rows: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray]:
    """As :func:`_exact_block` through the model's hnswlib index: one batched walk per block."""
    ix = snap.index
    Y = ix.item_factors
    n_items = len(Y)
    n = min(n_items, max(ix.ef, 2 * k))
    if not ix.walks(n):
        return _exact_block(Y, X, k, hidden, banned_rows)
    if n > ix.ef:
        ix.index.set_ef(n)
    try:
        labels, _ = ix.index.knn_query(_query(X, ix.space), k=n)
    finally:
        if n > ix.ef:
            ix.index.set_ef(ix.ef)
    labels = labels.astype(np.int64)
    scores = np.einsum("bnd,bd->bn", Y[labels], X)  # exact re-scoring of the candidates
    # suppressed candidates: a (position, row) key per pair, looked up in one isin
    keys = np.arange(len(X), dtype=np.int64)[:, None] * n_items + labels
    drop = np.isin(keys, hidden[0] * n_items + hidden[1])
    if len(banned_rows):
        drop |= np.isin(labels, banned_rows)
    scores[drop] = -np.inf
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    rows = np.take_along_axis(labels, order, axis=1)
    s = np.take_along_axis(scores, order, axis=1)
    short = np.flatnonzero(np.isinf(s[:, -1])) if k <= n else np.arange(len(X))
    for j in short:  # the walk left too few: this user is scored exactly alone
        sel = hidden[0] == j
        r, v = _exact_block(Y, X[j:j + 1], k, (np.zeros(sel.sum(), np.int64), hidden[1][sel]),
                            banned_rows)
        rows[j], s[j] = r[0], v[0]
    return rows, s


def _popular(snap: TenantSnapshot, k: int, hidden_rows: set[int]) -> list[int]:
    """Rows of the model's most popular unsuppressed items: the chain's last step with a
    model (scored by their popularity, as ``Recommend`` scores them)."""
    out = []
    for r in snap.popular_order.tolist():
        if r not in hidden_rows:
            out.append(r)
            if len(out) == k:
                break
    return out


@dataclass
class Block:
    """The answers of one block of users: ``rows``/``scores`` (B, k) best first, the first
    ``n[j]`` of row ``j`` valid (fewer when fewer items are eligible), ``sources`` per user."""

    users: list[str]
    sources: np.ndarray
    rows: np.ndarray
    scores: np.ndarray
    n: np.ndarray

    def answers(self) -> list[tuple[str, int, list[tuple[str, float]]]]:
        """``(user_id, source, [(item row, score), ...])`` per user (rows, not ids)."""
        return [(u, int(self.sources[j]),
                 list(zip(self.rows[j, :self.n[j]].tolist(),
                          self.scores[j, :self.n[j]].tolist())))
                for j, u in enumerate(self.users)]

    def __len__(self) -> int:
        return len(self.users)

    def slice(self, lo: int, hi: int) -> Block:
        return Block(self.users[lo:hi], self.sources[lo:hi], self.rows[lo:hi],
                     self.scores[lo:hi], self.n[lo:hi])


def score_block(snap: TenantSnapshot, users: Sequence[str], k: int, sup: Suppression,
                banned_rows: np.ndarray, mode: str = "exact") -> Block:
    """The top-``k`` of each user of one block (see the module docstring)."""
    users = list(users)
    X, sources, epos, erows = _block_vectors(snap, users, sup)
    hidden = _hidden_pairs(snap, users, sup, epos, erows)
    if mode == "exact":
        rows, scores = _exact_block(snap.index.item_factors, X, k, hidden, banned_rows)
    else:
        rows, scores = _index_block(snap, X, k, hidden, banned_rows)
    rows, scores = np.ascontiguousarray(rows), np.ascontiguousarray(scores)
    for j in np.flatnonzero(sources == recommender_pb2.POPULARITY):  # no vector: popularity
        hid = set(hidden[1][hidden[0] == j].tolist()) | set(banned_rows.tolist())
        pop = _popular(snap, k, hid)
        rows[j], scores[j] = -1, -np.inf
        rows[j, :len(pop)] = pop
        scores[j, :len(pop)] = snap.popularity[pop]
    n = np.isfinite(scores).sum(axis=1)  # -inf sorts last: the valid ones come first
    return Block(users, sources, rows, scores, n)


def recommend_block(snap: TenantSnapshot, users: Sequence[str], k: int, sup: Suppression,
                    banned_rows: np.ndarray, mode: str = "exact"
                    ) -> list[tuple[str, int, list[tuple[str, float]]]]:
    """``(user_id, source, [(item_id, score), ...])`` for each user of one block."""
    ids = snap.item_id_list
    return [(u, src, [(ids[r], s) for r, s in items])
            for u, src, items in score_block(snap, users, k, sup, banned_rows, mode).answers()]


# -- writing -------------------------------------------------------------------------------------
def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class _ShardWriter:
    """Streams blocks into shards of ``shard_users`` users: each written under a temporary
    name, renamed when complete, and then described (count, bytes, sha256) in ``shards``."""

    def __init__(self, out: Path, fmt: str, snap: TenantSnapshot, generated_at: str,
                 shard_users: int, first: int = 0) -> None:
        self.out, self.fmt, self.snap, self.generated_at = out, fmt, snap, generated_at
        self.shard_users = shard_users
        self.first = first  # the number of this writer's first shard (a Spark task's shard)
        self.shards: list[dict] = []
        self._f = None  # the open shard: a file (jsonl) or a ParquetWriter
        self._users = self._items = 0
        if fmt == "jsonl":
            # every item's JSON up to its score, made once: a line is then joins of strings
            self._pre = ['{"item_id":' + json.dumps(i) + ',"score":' for i in snap.item_id_list]
            self._head = ',"model_version":%d,"generated_at":%s,"source":"' % (
                snap.version, json.dumps(generated_at))

    def write(self, block: Block) -> None:
        lo = 0
        while lo < len(block):
            if self._f is None:
                self._open()
            take = min(len(block) - lo, self.shard_users - self._users)
            part = block.slice(lo, lo + take)
            (self._jsonl if self.fmt == "jsonl" else self._parquet)(part)
            self._users += take
            self._items += int(part.n.sum())
            lo += take
            if self._users == self.shard_users:
                self.close()

    def _name(self) -> str:
        return f"part-{self.first + len(self.shards):05d}.{self.fmt}"

    def _open(self) -> None:
        # the pid in the name: a retried Spark task may write the same shard beside another
        self._tmp = self.out / f".{self._name()}.{os.getpid()}.tmp"
        if self.fmt == "jsonl":
            self._f = open(self._tmp, "w")
        else:
            import pyarrow.parquet as pq
            self._f = pq.ParquetWriter(self._tmp, _parquet_schema())

    def close(self) -> None:
        if self._f is None:
            return
        if self.fmt == "jsonl":
            self._f.flush()
            os.fsync(self._f.fileno())
        self._f.close()
        self._f = None
        name = self._name()
        os.replace(self._tmp, self.out / name)
        self.shards.append({"file": name, "users": self._users, "items": self._items,
                            "bytes": (self.out / name).stat().st_size,
                            "sha256": _sha256(self.out / name)})
        self._users = self._items = 0

    def _jsonl(self, b: Block) -> None:
        pre, head, dumps = self._pre, self._head, json.dumps
        lines = []
        rows, scores = b.rows.tolist(), b.scores.tolist()
        for j, u in enumerate(b.users):
            n = int(b.n[j])
            items = ",".join([pre[r] + repr(s) + "}" for r, s in zip(rows[j][:n], scores[j][:n])])
            lines.append('{"user_id":' + dumps(u) + head + _SOURCE_NAME[int(b.sources[j])]
                         + '","items":[' + items + "]}\n")
        self._f.write("".join(lines))

    def _parquet(self, b: Block) -> None:
        import pyarrow as pa
        n = b.n.astype(np.int32)
        offsets = np.concatenate([[0], np.cumsum(n)]).astype(np.int32)
        valid = np.arange(b.rows.shape[1])[None, :] < n[:, None]
        ids = self.snap.item_ids  # numpy strings: one gather, no Python loop
        items = pa.ListArray.from_arrays(pa.array(offsets), pa.StructArray.from_arrays(
            [pa.array(ids[b.rows[valid]].astype(object), pa.string()),
             pa.array(b.scores[valid].astype(np.float64))], names=["item_id", "score"]))
        m = len(b)
        self._f.write_table(pa.table({
            "user_id": pa.array(b.users, pa.string()),
            "model_version": pa.array(np.full(m, self.snap.version, np.int64)),
            "generated_at": pa.array([self.generated_at] * m, pa.string()),
            "source": pa.array([_SOURCE_NAME[int(x)] for x in b.sources], pa.string()),
            "items": items}, schema=_parquet_schema()))


def _parquet_schema():
    import pyarrow as pa
    return pa.schema([("user_id", pa.string()), ("model_version", pa.int64()),
                      ("generated_at", pa.string()), ("source", pa.string()),
                      ("items", pa.list_(pa.struct([("item_id", pa.string()),
                                                    ("score", pa.float64())])))])


def export(snap: TenantSnapshot, out: str | os.PathLike, k: int,
           users: Iterable[str] | None = None, sup: Suppression | None = None,
           fmt: str = "jsonl", mode: str = "exact", shard_users: int = 100_000,
           block_users: int | None = None, progress: bool = False) -> dict:
    """Write the top-``k`` of ``users`` (default: every user of ``snap``) into ``out``.

    Returns the manifest (also written to ``out/manifest.json``, last).

    Raises
    ------
    ValueError
        An unknown format or mode, ``k < 1``, or an ``out`` that already holds an export.
    """
    out = start(out, k, fmt, mode)
    sup = sup or Suppression()
    users, n_asked = users_to_export(snap, users, sup)
    banned_rows = banned_item_rows(snap, sup)
    block = block_users or default_block(snap)
    generated_at = now_iso()
    writer = _ShardWriter(out, fmt, snap, generated_at, shard_users)
    t0 = time.perf_counter()
    sources: dict[str, int] = {}
    with tqdm(total=len(users), desc=f"export {snap.tenant}/{snap.algorithm} v{snap.version}",
              unit="user", disable=not progress) as bar:
        for lo in range(0, len(users), block):
            b = score_block(snap, users[lo:lo + block], k, sup, banned_rows, mode)
            for src, c in zip(*np.unique(b.sources, return_counts=True)):
                sources[_SOURCE_NAME[int(src)]] = sources.get(_SOURCE_NAME[int(src)], 0) + int(c)
            writer.write(b)
            bar.update(len(b))
        writer.close()
    return write_manifest(out, snap, k, fmt, mode, generated_at, users, n_asked, sup, sources,
                          time.perf_counter() - t0, writer.shards)


# -- shared with the Spark export (serving.export_spark) ------------------------------------------
def start(out: str | os.PathLike, k: int, fmt: str, mode: str) -> Path:
    """Check the arguments and make ``out`` (which must not hold an export yet)."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    out = Path(out)
    if (out / MANIFEST).exists():
        raise ValueError(f"{out} already holds an export (manifest.json); choose a new --out")
    out.mkdir(parents=True, exist_ok=True)
    return out


def users_to_export(snap: TenantSnapshot, users: Iterable[str] | None,
                    sup: Suppression) -> tuple[list[str], int]:
    """The users to write (default every user of ``snap``; duplicates dropped; erased users
    left out: an erased user is sent nothing, the right to be forgotten), and how many were
    asked for."""
    users = list(snap.user_row) if users is None else list(dict.fromkeys(users))
    n_asked = len(users)
    if sup.erased:
        users = [u for u in users if u not in sup.erased]
    return users, n_asked


def banned_item_rows(snap: TenantSnapshot, sup: Suppression) -> np.ndarray:
    return np.fromiter(sorted(snap.item_row[i] for i in sup.banned if i in snap.item_row),
                       np.int64)


def default_block(snap: TenantSnapshot) -> int:
    """Users per matrix product: ``BLOCK_VALUES`` scores, at most 4096 users."""
    return max(1, min(4096, BLOCK_VALUES // max(1, len(snap.item_ids))))


def now_iso() -> str:
    now = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + \
        f".{int(now * 1000) % 1000:03d}Z"


def write_manifest(out: Path, snap: TenantSnapshot, k: int, fmt: str, mode: str,
                   generated_at: str, users: list[str], n_asked: int, sup: Suppression,
                   sources: dict[str, int], seconds: float, shards: list[dict],
                   **extra) -> dict:
    """Write ``manifest.json`` (last, atomically) and return it; ``extra``: more fields."""
    manifest = {"tenant": snap.tenant, "algorithm": snap.algorithm,
                "model_version": snap.version, "k": k, "format": fmt, "mode": mode,
                "generated_at": generated_at, "users": len(users),
                "erased_skipped": n_asked - len(users),
                "items": sum(s["items"] for s in shards), "sources": sources,
                "suppression": sup.applied + (["catalog bans"] if sup.banned else []),
                "seconds": round(seconds, 3), **extra, "shards": shards}
    tmp = out / f".{MANIFEST}.tmp"
    tmp.write_text(json.dumps(manifest, indent=2))
    os.replace(tmp, out / MANIFEST)
    return manifest


def verify(out: str | os.PathLike) -> list[str]:
    """Problems of an export directory against its manifest (empty: complete and intact).

    Each shard must exist with its sha256 and hold its user count (lines, or Parquet rows).
    """
    out = Path(out)
    try:
        manifest = json.loads((out / MANIFEST).read_text())
    except (OSError, ValueError) as e:
        return [f"manifest.json is missing or unreadable: {e}"]
    problems = []
    total = 0
    for s in manifest.get("shards", []):
        p = out / s["file"]
        if not p.exists():
            problems.append(f"{s['file']} is missing")
            continue
        if p.stat().st_size != s["bytes"]:
            problems.append(f"{s['file']} has {p.stat().st_size} bytes, the manifest "
                            f"{s['bytes']} (cut short?)")
        if _sha256(p) != s["sha256"]:
            problems.append(f"{s['file']} does not match its sha256")
            continue
        n = _count(p, manifest.get("format", "jsonl"))
        if n != s["users"]:
            problems.append(f"{s['file']} holds {n} users, the manifest {s['users']}")
        total += n
    if not problems and total != manifest.get("users"):
        problems.append(f"the shards hold {total} users, the manifest {manifest.get('users')}")
    return problems


def _count(path: Path, fmt: str) -> int:
    if fmt == "parquet":
        import pyarrow.parquet as pq
        return pq.ParquetFile(path).metadata.num_rows
    with open(path, "rb") as f:
        return sum(1 for _ in f)


def iter_records(out: str | os.PathLike) -> Iterator[dict]:
    """Every exported record of a directory, in shard order (JSON lines or Parquet)."""
    out = Path(out)
    manifest = json.loads((out / MANIFEST).read_text())
    for s in manifest["shards"]:
        if manifest["format"] == "parquet":
            import pyarrow.parquet as pq
            yield from pq.read_table(out / s["file"]).to_pylist()
        else:
            with open(out / s["file"]) as f:
                for line in f:
                    yield json.loads(line)


# -- the command ---------------------------------------------------------------------------------
def run_export(cfg, tenant: str, k: int, out: str, algorithm: str | None = None,
               users_file: str | None = None, fmt: str = "jsonl", mode: str = "exact",
               events_file: str | None = None, broker: bool = True,
               shard_users: int = 100_000, progress: bool = False,
               engine: str | None = None) -> dict:
    """``recsys-stream export``: the served version of ``tenant`` (``CURRENT`` of ``algorithm``,
    default the tenant's ``DEFAULT``), with the suppression of the module docstring.

    ``events_file``: the training items come from this file (as ``trainer --events-file``)
    instead of the worker's state changelog; ``broker=False``: no profiles and no catalog bans
    are read (the manifest's ``suppression`` says what was applied). ``engine``: ``"local"``
    (this process) or ``"spark"`` (the scoring and writing in Spark executors on
    ``trainer.spark``, :mod:`recsys_stream.serving.export_spark`); default: ``"spark"`` for a
    tenant whose training engine is Spark.
    """
    engine = engine or ("spark" if cfg.engine_of(tenant) == "spark" else "local")
    if engine not in ("local", "spark"):
        raise ValueError(f"engine must be local or spark, got {engine!r}")
    from recsys_stream.batch.app import load_data
    cfg.tenant(tenant)
    store = ModelStore(cfg.model_store)
    algorithm = algorithm or store.default_algorithm(tenant) or "als"
    art = store.load(tenant, algorithm)  # verified
    snap = TenantSnapshot.from_artifacts(art)
    sup = Suppression()
    if events_file or broker:
        (data,) = load_data(cfg, events_file, tenant, progress)
        sup.seen = seen_matrix(snap, data.histories)
        sup.applied.append("training items and hides (" +
                           (f"events file {events_file}" if events_file else
                            "state changelog") + ")")
    if broker:
        sup.profiles, sup.erased = read_profiles(cfg, tenant)
        sup.applied.append(f"profiles ({len(sup.profiles)} read, {len(sup.erased)} erased "
                           "users not exported)")
        sup.banned = read_banned(cfg, tenant)
    users = None
    if users_file:
        with open(users_file) as f:
            users = [line.strip() for line in f if line.strip()]
    if engine == "spark":
        from recsys_stream.serving.export_spark import export_spark
        manifest = export_spark(cfg.trainer.spark, art, snap, out, k, users, sup, fmt, mode,
                                shard_users)
    else:
        manifest = export(snap, out, k, users, sup, fmt, mode, shard_users, progress=progress)
    log.info("%s/%s v%d: %d users exported to %s in %.1fs (%s)", tenant, algorithm,
             snap.version, manifest["users"], out, manifest["seconds"],
             ", ".join(manifest["suppression"]) or "nothing suppressed")
    return manifest
