"""Erased users leave the model store: every kept version is rewritten without their rows.

Which users are erased. From the state changelog: a user's state is never deleted except by an
erasure (its tombstone), so a user with a row in a kept version and no state in this round's data
was erased; this holds after compaction has removed the tombstone, and after a trainer restart.
From an events file: the users with an erase record in it (``TenantData.erased``).

Why rewritten and not removed. Removing every version trained on an erased user would remove
every kept version at each erasure, and with them the operator's rollback (``models rollback``)
and the currently served version. A user's row is only their own vector: the item factors,
popularity, index and metrics are aggregates over all users, and everything the server, the
worker and the item stage read of a version besides the rows stays valid without them. (The
item factors were fitted with the user's data: the next retrain replaces them; the aggregates
hold no byte of the user.) So the rows (``user_ids``, ``user_factors``, mf's ``user_bias``)
are dropped, the manifest's shapes and checksums are recomputed, and the new directory replaces
the old one under the tenant's lock: written beside it, then two renames. The young slice
(``contracts.young_slice``) names training users by row: their entries go too, and the other
rows are renumbered.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np

from recsys_stream.contracts.model_store import ALGORITHMS, MANIFEST, ModelStore, sha256_file

log = logging.getLogger(__name__)
_PER_USER = ("user_ids", "user_factors", "user_bias")


def scrub_tenant(store: ModelStore, tenant: str, live: set[str] | None = None,
                 erased: set[str] = frozenset()) -> dict[str, dict[int, int]]:
    """Rewrite the tenant's kept versions without the rows of erased users.

    Parameters
    ----------
    live : the users of this round's data (from the changelog): every other row goes.
        None: only ``erased`` go.
    erased : users known to be erased (an events file's erase records)

    Returns
    -------
    {algorithm: {version: rows dropped}} of the rewritten versions
    """
    out: dict[str, dict[int, int]] = {}
    with store.tenant_lock(tenant):
        for algorithm in ALGORITHMS:
            for version in store.versions(tenant, algorithm):
                d = store.version_dir(tenant, algorithm, version)
                try:
                    ids = np.load(d / "user_ids.npy", allow_pickle=False)
                except (OSError, ValueError):
                    continue  # unreadable: verification keeps it from being served anyway
                drop = np.isin(ids, list(erased)) if live is None else \
                    ~np.isin(ids, list(live))
                if drop.any():
                    _rewrite(d, ~drop)
                    out.setdefault(algorithm, {})[version] = int(drop.sum())
    if out:
        log.info("%s: erased users' rows dropped from the kept versions %s", tenant, out)
    return out


def _rewrite_young(tmp: Path, keep: np.ndarray, manifest: dict) -> None:
    """The young slice without the dropped users' entries, the kept users renumbered."""
    users = np.load(tmp / "young_users.npy", allow_pickle=False)
    conf = np.load(tmp / "young_confidences.npy", allow_pickle=False)
    indptr = np.load(tmp / "young_indptr.npy", allow_pickle=False)
    ok = keep[users]
    column = np.repeat(np.arange(len(indptr) - 1), np.diff(indptr))[ok]
    arrays = {"young_users": (np.cumsum(keep) - 1)[users[ok]].astype(np.int64),
              "young_confidences": conf[ok],
              "young_indptr": np.concatenate([[0], np.cumsum(np.bincount(
                  column, minlength=len(indptr) - 1))]).astype(np.int64)}
    for name, arr in arrays.items():
        p = tmp / f"{name}.npy"
        p.unlink()
        np.save(p, arr, allow_pickle=False)
        manifest.setdefault("shapes", {})[name] = list(arr.shape)


def _rewrite(d: Path, keep: np.ndarray) -> None:
    """``d`` without the rows ``~keep`` (module docstring)."""
    tmp = d.parent / f".tmp-scrub-{d.name}-{os.getpid()}"
    old = d.parent / f".old-scrub-{d.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(d, tmp)
    manifest = json.loads((tmp / MANIFEST).read_text())
    for name in _PER_USER:
        p = tmp / f"{name}.npy"
        if p.exists():
            arr = np.load(p, allow_pickle=False)[keep]
            p.unlink()  # a new file: the old one's blocks are not rewritten in place
            np.save(p, arr, allow_pickle=False)
            manifest.setdefault("shapes", {})[name] = list(arr.shape)
    if (tmp / "young_users.npy").exists():
        _rewrite_young(tmp, keep, manifest)
    manifest["files"] = {p.name: sha256_file(p) for p in sorted(tmp.iterdir())
                         if p.name != MANIFEST and p.name in manifest.get("files", {})}
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True))
    os.rename(d, old)
    os.rename(tmp, d)
    shutil.rmtree(old, ignore_errors=True)
