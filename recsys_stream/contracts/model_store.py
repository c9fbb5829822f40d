"""The versioned model store: the on-disk contract between trainer, worker and server.

Layout (DESIGN.md, "Models and the model store")::

    <root>/<tenant>/<algorithm>/<version>/manifest.json  item_ids.npy  item_factors.npy
                                          user_ids.npy  user_factors.npy  popularity.npy  index.bin
                                          (mf also: user_bias.npy  global_mean.npy)
                                          (als, bpr: young_*.npy, contracts.young_slice)
    <root>/<tenant>/<algorithm>/CURRENT   the served version of that algorithm
    <root>/<tenant>/DEFAULT              the algorithm served when a request names none

Versions are monotonic per tenant, across algorithms, so "the version never goes backwards"
holds for a tenant's answers whatever algorithm serves them. A version directory is written
under a temporary name and renamed when complete; pointers are replaced with ``os.replace``.
Readers verify sha256, shapes and finiteness before anything is served (invariant 6).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import numpy as np

from recsys_stream.contracts import young_slice
from recsys_stream.contracts.confidence import ConfidenceSettings
from recsys_stream.contracts.young_slice import YoungSlice

ALGORITHMS = ("als", "bpr", "mf")
ARRAY_FILES = ("item_ids", "item_factors", "user_ids", "user_factors", "popularity")
# Explicit MF's biases beside its factors (its item biases are the item factors' last column):
# b_u per user row and the global mean μ (a 0-d array), checksummed like every file.
EXTRA_FILES = {"mf": ("user_bias", "global_mean")}
INDEX_FILE = "index.bin"
MANIFEST = "manifest.json"
REJECTED = "REJECTED.json"


class ModelVerificationError(Exception):
    """A model version failed verification; ``reasons`` lists every problem found."""

    def __init__(self, path: Path, reasons: list[str]):
        super().__init__(f"model {path} failed verification: " + "; ".join(reasons))
        self.path, self.reasons = path, reasons


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass(frozen=True)
class ModelArtifacts:
    """One loaded, verified model version. Arrays are read-only."""

    path: Path
    manifest: dict
    item_ids: np.ndarray      # (n_items,) str
    item_factors: np.ndarray  # (n_items, width) float32; BPR: last column is the item bias
    user_ids: np.ndarray      # (n_users,) str
    user_factors: np.ndarray  # (n_users, width) float32; BPR: last column is 1
    popularity: np.ndarray    # (n_items,) float32, interactions per item in the training window
    user_bias: np.ndarray | None = None  # mf: (n_users,) b_u
    global_mean: float | None = None     # mf: μ
    young: YoungSlice | None = None      # als, bpr: the young items' training columns

    @property
    def tenant(self) -> str:
        return self.manifest["tenant"]

    @property
    def algorithm(self) -> str:
        return self.manifest["algorithm"]

    @property
    def version(self) -> int:
        return int(self.manifest["version"])

    @property
    def confidence(self) -> ConfidenceSettings:
        return ConfidenceSettings.from_dict(self.manifest["confidence"])

    @property
    def regularization(self) -> float:
        return float(self.manifest["hyperparameters"]["regularization"])

    @property
    def bias_column(self) -> bool:
        return bool(self.manifest.get("bias_column", False))

    @property
    def index_path(self) -> Path | None:
        p = self.path / INDEX_FILE
        return p if p.exists() else None

    @property
    def uri(self) -> str:
        return self.path.resolve().as_uri()


class ModelStore:
    """Reads and writes model versions under ``root``."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)

    # -- paths and pointers ----------------------------------------------------------------
    def version_dir(self, tenant: str, algorithm: str, version: int) -> Path:
        return self.root / tenant / algorithm / str(version)

    def tenants(self) -> list[str]:
        return sorted(p.name for p in self.root.iterdir() if p.is_dir()) if self.root.exists() else []

    def versions(self, tenant: str, algorithm: str) -> list[int]:
        d = self.root / tenant / algorithm
        if not d.exists():
            return []
        return sorted(int(p.name) for p in d.iterdir() if p.is_dir() and p.name.isdigit())

    def next_version(self, tenant: str) -> int:
        """One more than any version of any algorithm of the tenant (monotonic model ids)."""
        return 1 + max((v for a in ALGORITHMS for v in self.versions(tenant, a)), default=0)

    def current_version(self, tenant: str, algorithm: str) -> int | None:
        p = self.root / tenant / algorithm / "CURRENT"
        return int(p.read_text().strip()) if p.exists() else None

    def default_algorithm(self, tenant: str) -> str | None:
        p = self.root / tenant / "DEFAULT"
        return p.read_text().strip() if p.exists() else None

    def set_current(self, tenant: str, algorithm: str, version: int) -> None:
        if not (self.version_dir(tenant, algorithm, version) / MANIFEST).exists():
            raise FileNotFoundError(f"no model {tenant}/{algorithm}/{version}")
        _atomic_write(self.root / tenant / algorithm / "CURRENT", f"{version}\n")

    @contextlib.contextmanager
    def tenant_lock(self, tenant: str) -> Iterator[None]:
        """Hold the tenant's pointer lock (an ``flock`` on ``<tenant>/.lock``, between processes).

        A trainer's publish (``CURRENT``, ``DEFAULT``, announcement, prune) and an operator's
        rollback each hold it, so a rollback can never land between a round's ``CURRENT`` and
        its announcement, leaving the pointer and the servers on different versions.
        """
        d = self.root / tenant
        d.mkdir(parents=True, exist_ok=True)
        with open(d / ".lock", "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def set_default_algorithm(self, tenant: str, algorithm: str) -> None:
        _atomic_write(self.root / tenant / "DEFAULT", f"{algorithm}\n")

    # -- writing ---------------------------------------------------------------------------
    def write(self, tenant: str, algorithm: str, version: int, *, item_ids, item_factors,
              user_ids, user_factors, popularity, manifest: dict,
              index_writer: Callable[[Path], dict] | None = None,
              extras: dict | None = None, young: YoungSlice | None = None) -> Path:
        """Write a complete version directory atomically; returns its final path.

        ``index_writer(path)`` writes the index file and returns manifest entries for it.
        ``extras``: the algorithm's ``EXTRA_FILES`` arrays (all of them, and no others).
        ``young``: the young items' training columns (``contracts.young_slice``), if any.
        """
        if algorithm not in ALGORITHMS:
            raise ValueError(f"unknown algorithm {algorithm!r}; expected one of {ALGORITHMS}")
        final = self.version_dir(tenant, algorithm, version)
        if final.exists():
            raise FileExistsError(f"model version already exists: {final}")
        tmp = final.parent / f".tmp-{version}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        arrays = {
            "item_ids": np.asarray(item_ids, dtype=str),
            "item_factors": np.asarray(item_factors, dtype=np.float32),
            "user_ids": np.asarray(user_ids, dtype=str),
            "user_factors": np.asarray(user_factors, dtype=np.float32),
            "popularity": np.asarray(popularity, dtype=np.float32),
        }
        extras = dict(extras or {})
        if set(extras) != set(EXTRA_FILES.get(algorithm, ())):
            raise ValueError(f"{algorithm} needs the extra arrays {EXTRA_FILES.get(algorithm, ())}"
                             f", got {sorted(extras)}")
        arrays.update({k: np.asarray(v) for k, v in extras.items()})
        if young is not None:
            arrays.update(young.arrays())
        for name, arr in arrays.items():
            np.save(tmp / f"{name}.npy", arr, allow_pickle=False)
        full = dict(manifest)
        full.update(tenant=tenant, algorithm=algorithm, version=int(version),
                    created_ms=int(time.time() * 1000),
                    shapes={k: list(v.shape) for k, v in arrays.items()})
        if index_writer is not None:
            full["index"] = index_writer(tmp / INDEX_FILE)
        full["files"] = {p.name: sha256_file(p) for p in sorted(tmp.iterdir())}
        (tmp / MANIFEST).write_text(json.dumps(full, indent=2, sort_keys=True))
        _fsync_dir(tmp)
        os.rename(tmp, final)
        return final

    def reject(self, tenant: str, algorithm: str, version: int, reasons: list[str]) -> None:
        """Keep a failed version for inspection, marked so it is never made current."""
        d = self.version_dir(tenant, algorithm, version)
        _atomic_write(d / REJECTED, json.dumps({"reasons": reasons,
                                                "rejected_ms": int(time.time() * 1000)}))

    def rejected_reasons(self, tenant: str, algorithm: str, version: int) -> list[str] | None:
        p = self.version_dir(tenant, algorithm, version) / REJECTED
        return json.loads(p.read_text())["reasons"] if p.exists() else None

    def prune(self, tenant: str, algorithm: str, keep: int) -> list[int]:
        """Keep the newest ``keep`` good versions and the newest ``keep`` rejected ones (for
        inspection), and always the current one; delete the rest. Returns the deleted versions.

        Good and rejected versions are counted apart: a run of failing rounds must not push out
        the good versions an operator would roll back to.
        """
        if keep <= 0:
            return []
        current = self.current_version(tenant, algorithm)
        good, rejected = [], []
        for v in self.versions(tenant, algorithm):
            (rejected if self.rejected_reasons(tenant, algorithm, v) is not None else good).append(v)
        old = sorted(v for v in good[:-keep] + rejected[:-keep] if v != current)
        for v in old:
            shutil.rmtree(self.version_dir(tenant, algorithm, v), ignore_errors=True)
        return old

    # -- reading ---------------------------------------------------------------------------
    def load(self, tenant: str, algorithm: str, version: int | None = None,
             verify: bool = True) -> ModelArtifacts:
        """Load a version (default: CURRENT), verified unless ``verify=False``."""
        if version is None:
            version = self.current_version(tenant, algorithm)
            if version is None:
                raise FileNotFoundError(f"no current {algorithm} model for tenant {tenant!r}")
        return load_dir(self.version_dir(tenant, algorithm, version), verify=verify)


def load_uri(uri: str, verify: bool = True) -> ModelArtifacts:
    """Load a version from the ``artifact_uri`` of a ``ModelPublished`` announcement."""
    parsed = urlparse(uri)
    if parsed.scheme not in ("file", ""):
        raise ValueError(f"unsupported model URI scheme {parsed.scheme!r} in {uri}")
    return load_dir(Path(parsed.path if parsed.scheme else uri), verify=verify)


def load_dir(path: Path, verify: bool = True) -> ModelArtifacts:
    """Load and (by default) verify one version directory; see :class:`ModelVerificationError`."""
    path = Path(path)
    mpath = path / MANIFEST
    if not mpath.exists():
        raise ModelVerificationError(path, ["manifest.json is missing"])
    try:
        manifest = json.loads(mpath.read_text())
    except ValueError as e:
        raise ModelVerificationError(path, [f"manifest.json is not JSON: {e}"]) from e
    reasons: list[str] = []
    if verify:
        for name, digest in manifest.get("files", {}).items():
            f = path / name
            if not f.exists():
                reasons.append(f"{name} is missing")
            elif sha256_file(f) != digest:
                reasons.append(f"{name} does not match its sha256")
        if reasons:
            raise ModelVerificationError(path, reasons)
    try:
        arrays = {n: np.load(path / f"{n}.npy", allow_pickle=False) for n in ARRAY_FILES}
    except (OSError, ValueError) as e:
        raise ModelVerificationError(path, [f"unreadable array: {e}"]) from e
    extra = {}
    for name in EXTRA_FILES.get(manifest.get("algorithm", ""), ()):
        try:
            extra[name] = np.load(path / f"{name}.npy", allow_pickle=False)
        except (OSError, ValueError) as e:
            raise ModelVerificationError(path, [f"unreadable array: {e}"]) from e
    if f"{young_slice.FILES[0]}.npy" in manifest.get("files", {}):
        try:
            extra["young"] = YoungSlice(*(np.load(path / f"{n}.npy", allow_pickle=False)
                                          for n in young_slice.FILES))
        except (OSError, ValueError) as e:
            raise ModelVerificationError(path, [f"unreadable array: {e}"]) from e
    for a in (*arrays.values(), *(v for v in extra.values() if isinstance(v, np.ndarray)),
              *(extra["young"].arrays().values() if "young" in extra else ())):
        a.setflags(write=False)
    if "global_mean" in extra:
        extra["global_mean"] = float(extra["global_mean"])
    art = ModelArtifacts(path=path, manifest=manifest, **arrays, **extra)
    if verify:
        reasons = check_shapes_and_values(art)
        if reasons:
            raise ModelVerificationError(path, reasons)
    return art


def check_shapes_and_values(art: ModelArtifacts) -> list[str]:
    """Shape agreement between ids and factors, and no NaN/Inf anywhere."""
    r = []
    ni, nu = len(art.item_ids), len(art.user_ids)
    if art.item_factors.ndim != 2 or art.item_factors.shape[0] != ni:
        r.append(f"item_factors shape {art.item_factors.shape} does not match {ni} item ids")
    if art.user_factors.ndim != 2 or art.user_factors.shape[0] != nu:
        r.append(f"user_factors shape {art.user_factors.shape} does not match {nu} user ids")
    if art.item_factors.ndim == 2 and art.user_factors.ndim == 2 and nu and \
            art.item_factors.shape[1] != art.user_factors.shape[1]:
        r.append("user and item factors differ in width")
    if art.popularity.shape != (ni,):
        r.append(f"popularity shape {art.popularity.shape} does not match {ni} item ids")
    for name in ("item_factors", "user_factors", "popularity"):
        if not np.isfinite(getattr(art, name)).all():
            r.append(f"{name} contains NaN or Inf")
    if len(set(art.item_ids.tolist())) != ni:
        r.append("item ids are not unique")
    if art.young is not None:
        r += art.young.problems(ni, nu)
    if art.algorithm == "mf":
        if art.user_bias is None or art.user_bias.shape != (nu,):
            r.append(f"user_bias shape {getattr(art.user_bias, 'shape', None)} does not match "
                     f"{nu} user ids")
        elif not np.isfinite(art.user_bias).all():
            r.append("user_bias contains NaN or Inf")
        if art.global_mean is None or not np.isfinite(art.global_mean):
            r.append("global_mean is missing, NaN or Inf")
        if not art.bias_column:
            r.append("an mf model must carry its item biases as the last item column")
    return r


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _fsync_dir(path: Path) -> None:
    for p in path.iterdir():
        with open(p, "rb") as f:
            os.fsync(f.fileno())
