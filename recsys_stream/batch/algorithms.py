"""Training engines: implicit ALS (Hu, Koren & Volinsky) and BPR (Rendle et al.) on ``implicit``.

Conventions (DESIGN.md): ``implicit`` multiplies the matrix by its ``alpha`` and uses the product
as the confidence itself, so it gets ``c = 1 + alpha*log1p(strength)`` and ``alpha=1.0``.
After the sweeps, ALS user vectors are re-solved exactly against the final item factors with the
same ``FoldInSolver`` the worker uses, so a batch user vector is exactly what the nearline fold-in
would compute for that user's history.

BPR keeps ``implicit``'s item-bias column: item factors are ``k+1`` wide and every user's last
entry is 1, so every score in the system is the plain inner product.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from recsys_stream.config import AlsConfig, BprConfig
from recsys_stream.contracts.foldin import FoldInSolver


@dataclass
class Factors:
    """A trained model's factors and what the manifest must say about them."""

    algorithm: str
    item_factors: np.ndarray
    user_factors: np.ndarray
    hyperparameters: dict
    bias_column: bool


def train_als(C: sp.csr_matrix, hp: AlsConfig, seed: int, progress: bool = False) -> Factors:
    from implicit.cpu.als import AlternatingLeastSquares
    with threadpool_limits(1, "blas"):  # implicit parallelises itself; nested BLAS threads thrash
        model = AlternatingLeastSquares(factors=hp.factors, regularization=hp.regularization,
                                        alpha=1.0, iterations=hp.iterations, random_state=seed,
                                        use_cg=True)
        model.fit(C, show_progress=progress)
        Y = np.asarray(model.item_factors, dtype=np.float32)
        # exact final user step: x_u = (YtY + Y_u^T (C_u - I) Y_u + lambda I)^-1 Y_u^T C_u p_u
        X = FoldInSolver(Y, hp.regularization).solve(C.indptr, C.indices, C.data)
    return Factors("als", Y, X, {"factors": hp.factors, "regularization": hp.regularization,
                                 "iterations": hp.iterations, "alpha_in_implicit": 1.0,
                                 "seed": seed}, bias_column=False)


def train_bpr(C: sp.csr_matrix, hp: BprConfig, seed: int, progress: bool = False) -> Factors:
    from implicit.cpu.bpr import BayesianPersonalizedRanking
    binary = C.copy()
    binary.data = np.ones_like(binary.data)  # BPR ranks observed over unobserved; p only
    with threadpool_limits(1, "blas"):
        model = BayesianPersonalizedRanking(factors=hp.factors, learning_rate=hp.learning_rate,
                                            regularization=hp.regularization,
                                            iterations=hp.iterations, random_state=seed)
        model.fit(binary, show_progress=progress)
    Y = np.asarray(model.item_factors, dtype=np.float32)   # (n_items, k+1): last = bias
    X = np.asarray(model.user_factors, dtype=np.float32)   # (n_users, k+1): last = 1
    return Factors("bpr", Y, X, {"factors": hp.factors, "learning_rate": hp.learning_rate,
                                 "regularization": hp.regularization,
                                 "iterations": hp.iterations,
                                 "foldin_regularization": hp.foldin_regularization,
                                 "seed": seed}, bias_column=True)


TRAINERS = {"als": train_als, "bpr": train_bpr}
