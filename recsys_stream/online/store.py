"""The online stage's RocksDB: per-user attribution state, counters and input offsets.

Keys: ``b"a" + tenant\\x1fuser`` -> ``UserAttribution`` bytes; ``b"c" + dims`` -> the
impressions, clicks and conversions of one (hour, tenant, algorithm, version, source,
experiment, arm, position, method); offsets under ``nearline.state.offset_key``. One
``WriteBatch`` per commit holds all three, so after a crash the counters and the states describe
exactly the prefix of both inputs that the stored offsets say (the worker's exactly-once).
"""

from __future__ import annotations

import tempfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from rocksdict import AccessType, Options, Rdict, WriteBatch

from recsys_stream.contracts.rocks import mark_purge, purge_keys, purge_pending, store_options
from recsys_stream.nearline.state import offset_key, scan, stored_offsets
from recsys_stream.online.attribution import KINDS, MOMENTS, UserAttribution, decode_counts, \
    dims_key, dims_of, encode_counts
from recsys_stream.online.stats import UserMoments

_USER, _COUNT, _MOMENT = b"a", b"c", b"m"


class OnlineStore:
    """The stage's state (``read_only``: a secondary for ``recsys-stream report``)."""

    def __init__(self, path: str | Path, read_only: bool = False) -> None:
        self.path = str(path)
        self._tmp = None
        if read_only:
            if not Path(path).exists():
                raise FileNotFoundError(f"no online-evaluation state in {path} (is "
                                        "`recsys-stream online` running with this config?)")
            # a secondary reads what the running stage has written, without its lock
            self._tmp = tempfile.TemporaryDirectory(prefix="online-report-")
            self._db = Rdict(self.path, options=Options(raw_mode=True),
                             access_type=AccessType.secondary(self._tmp.name))
            self._db.try_catch_up_with_primary()
        else:
            Path(path).mkdir(parents=True, exist_ok=True)
            self._db = Rdict(self.path, options=store_options())
            purge_pending(self._db)  # erased users a killed stage committed and did not purge
        self._counts = {k: decode_counts(v) for k, v in scan(self._db, _COUNT)}
        # per tenant \x1f experiment \x1f arm: the per-user test's sums (MOMENTS order)
        self._moments = {k: [int(x) for x in v.split(b",")]
                         for k, v in scan(self._db, _MOMENT)}

    def users(self, keys: list[bytes]) -> dict[bytes, UserAttribution]:
        if not keys:
            return {}
        values = self._db[[_USER + k for k in keys]]
        return {k: UserAttribution.decode(v) for k, v in zip(keys, values)}

    def commit(self, users: dict[bytes, UserAttribution], deltas: Counter,
               offsets: dict[tuple[str, int], int], erased: list[bytes] = (),
               moments: Counter | None = None) -> None:
        """Write states (an empty one is deleted), add ``deltas`` to the counters and store the
        next input offsets, atomically; ``erased``: users whose rows an erase record emptied,
        marked to be purged from the files (``purge``)."""
        wb = WriteBatch(raw_mode=True)
        mark_purge(wb, [_USER + k for k in erased])
        for key, st in users.items():
            if st.empty:
                wb.delete(_USER + key)
            else:
                wb.put(_USER + key, st.encode())
        totals = {}
        for (dims, kind), n in deltas.items():
            k = dims_key(dims)
            c = totals.setdefault(k, list(self._counts.get(k, (0, 0, 0))))
            c[KINDS.index(kind)] += n
        for k, c in totals.items():
            wb.put(_COUNT + k, encode_counts(tuple(c)))
        sums = {}
        for (tenant, exp, arm, m), n in (moments or {}).items():
            k = f"{tenant}\x1f{exp}\x1f{arm}".encode()
            v = sums.setdefault(k, list(self._moments.get(k, [0] * len(MOMENTS))))
            v[MOMENTS.index(m)] += n
        for k, v in sums.items():
            wb.put(_MOMENT + k, ",".join(map(str, v)).encode())
        for (topic, partition), nxt in offsets.items():
            wb.put(offset_key(topic, partition), str(nxt).encode())
        self._db.write(wb)
        self._counts.update(totals)
        self._moments.update(sums)

    def purge(self, keys: list[bytes]) -> None:
        """Make erased users' rows leave the files (``contracts.rocks.purge_keys``)."""
        purge_keys(self._db, [_USER + k for k in keys])

    def offsets(self, topic: str) -> dict[int, int]:
        return stored_offsets(self._db, topic)

    def counts(self) -> Iterator[tuple[tuple, list[int]]]:
        """(dims, [impressions, clicks, conversions]) of every counter."""
        for k, c in self._counts.items():
            yield dims_of(k), c

    def moments(self, tenant: str) -> dict[tuple[str, str], UserMoments]:
        """Per (experiment, arm) of ``tenant``: the per-user test's sums."""
        out = {}
        for k, v in self._moments.items():
            t, exp, arm = k.decode().split("\x1f")
            if t == tenant:
                out[(exp, arm)] = UserMoments(*v)
        return out

    def close(self) -> None:
        self._db.close()
        if self._tmp is not None:
            self._tmp.cleanup()
