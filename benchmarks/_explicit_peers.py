"""The rating-prediction peers of ``benchmarks/explicit.py``, run in their own venv (.venv-peers).

Usage (``explicit.py`` calls it): ``.venv-peers/bin/python benchmarks/_explicit_peers.py DIR NAME...``

``DIR`` holds ``train.csv`` and ``test.csv`` (``user,item,rating[,timestamp]``: the trainer's
temporal holdout, written by ``explicit.py``). Each peer is fitted on train with its library's
defaults, predicts every test row (NaN where it cannot: an unknown user or item, which the
caller fills from the shared baseline), writes ``pred_<NAME>.npy`` and prints one JSON line with
its fit and predict seconds. Peers: ``surprise_svd``, ``surprise_svdpp`` (Surprise 1.1),
``lenskit_biasedmf`` (LensKit 0.14 ``als.BiasedMF``), ``cornac_mf`` (cornac ``MF``).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("LK_NUM_PROCS", "1")
os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

SEED = 42


def surprise(train: pd.DataFrame, test: pd.DataFrame, plus: bool):
    import surprise as S
    data = S.Dataset.load_from_df(train[["user", "item", "rating"]],
                                  S.Reader(rating_scale=(0.5, 5.0)))
    algo = S.SVDpp(random_state=SEED) if plus else S.SVD(random_state=SEED)
    t0 = time.perf_counter()
    algo.fit(data.build_full_trainset())
    fit = time.perf_counter() - t0
    t0 = time.perf_counter()
    # Surprise predicts unknown users / items from the biases it knows (and clips to the scale)
    pred = np.array([algo.predict(u, i).est for u, i in zip(test.user, test.item)])
    return pred, fit, time.perf_counter() - t0, f"scikit-surprise {S.__version__}"


def lenskit(train: pd.DataFrame, test: pd.DataFrame):
    import lenskit
    from lenskit import batch
    from lenskit.algorithms import als
    algo = als.BiasedMF(50, rng_spec=SEED)  # features is required; 50 as in LensKit's examples
    t0 = time.perf_counter()
    algo.fit(train[["user", "item", "rating"]])
    fit = time.perf_counter() - t0
    t0 = time.perf_counter()
    out = batch.predict(algo, test[["user", "item"]], n_jobs=1)
    pred = out["prediction"].to_numpy(dtype=np.float64)  # NaN for unknown users / items
    return np.clip(pred, 0.5, 5.0), fit, time.perf_counter() - t0, \
        f"lenskit {lenskit.__version__}"


def cornac_mf(train: pd.DataFrame, test: pd.DataFrame):
    import cornac
    from cornac.data import Dataset
    ds = Dataset.from_uir(list(train[["user", "item", "rating"]].itertuples(index=False)),
                          seed=SEED)
    model = cornac.models.MF(seed=SEED)
    t0 = time.perf_counter()
    model.fit(ds)
    fit = time.perf_counter() - t0
    t0 = time.perf_counter()
    uid, iid = ds.uid_map, ds.iid_map
    pred = np.full(len(test), np.nan)
    for n, (u, i) in enumerate(zip(test.user, test.item)):
        if u in uid and i in iid:
            pred[n] = model.score(uid[u], iid[i])
    return np.clip(pred, 0.5, 5.0), fit, time.perf_counter() - t0, f"cornac {cornac.__version__}"


PEERS = {"surprise_svd": lambda tr, te: surprise(tr, te, False),
         "surprise_svdpp": lambda tr, te: surprise(tr, te, True),
         "lenskit_biasedmf": lenskit, "cornac_mf": cornac_mf}


def main(argv: list[str]) -> int:
    d = Path(argv[0])
    train = pd.read_csv(d / "train.csv", dtype={"user": str, "item": str})
    test = pd.read_csv(d / "test.csv", dtype={"user": str, "item": str})
    for name in argv[1:] or list(PEERS):
        try:
            pred, fit, predict, version = PEERS[name](train, test)
        except Exception as e:  # a peer that fails is reported, not fatal for the others
            print(json.dumps({"name": name, "error": f"{type(e).__name__}: {e}"}), flush=True)
            continue
        np.save(d / f"pred_{name}.npy", np.asarray(pred, dtype=np.float64))
        print(json.dumps({"name": name, "fit_s": fit, "predict_s": predict,
                          "version": version}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
