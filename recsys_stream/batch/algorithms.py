"""Training engines: implicit ALS (Hu, Koren & Volinsky 2008) and BPR (Rendle et al. 2009).

Both run on ``implicit`` with BLAS pinned to one thread around the fit (``implicit``
parallelises over users itself; nested BLAS threads only thrash on a shared machine), and both
return a :class:`Factors`: item and user factors plus what the manifest must say about them.

ALS minimises ``sum_{u,i} c_ui (p_ui - x_u.y_i)^2 + lambda (|X|^2 + |Y|^2)`` over all pairs.
Conventions (DESIGN.md): ``implicit`` multiplies the matrix by its ``alpha`` and uses the product
as the confidence itself (no 1 added), so it gets ``c = 1 + alpha*log1p(strength)`` directly and
``alpha=1.0``; its lambda is not scaled by the user's interaction count. The sweeps use the
conjugate-gradient solver (approximate). After them, every user vector is re-solved exactly
against the final item factors with the worker's ``FoldInSolver``::

    x_u = (YtY + Y_u^T (C_u - I) Y_u + lambda I)^-1  Y_u^T C_u p_u

so a stored batch user vector is exactly what the nearline fold-in computes for the same
history (and what ``implicit``'s ``recalculate_user`` gives).

BPR maximises ``sum ln sigmoid(x_u.y_i - x_u.y_j) - lambda |theta|^2`` over sampled
(user, seen i, unseen j) triples of the binary matrix ``p``. ``implicit`` keeps an item-bias
column: item factors are ``k+1`` wide and every user's last entry is fixed at 1, so every score
in the system stays the plain inner product ``x_u . y_i``. The manifest says ``bias_column``
and carries ``foldin_regularization``, the lambda the worker's least-squares fold-in uses on
BPR item factors.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from recsys_stream.config import AlsConfig, BprConfig
from recsys_stream.contracts.foldin import FoldInSolver

log = logging.getLogger(__name__)


@dataclass
class Factors:
    """A trained model's factors and what the manifest must say about them.

    Attributes
    ----------
    algorithm : "als" or "bpr"
    item_factors : ndarray of shape (n_items, width), float32
    user_factors : ndarray of shape (n_users, width), float32
    hyperparameters : dict, written to the manifest (always has "regularization")
    bias_column : bool, the last column is an item bias (users' entry = 1): BPR's, mf's ``b_i``
    extras : dict of name to ndarray, more arrays of the version (mf: ``user_bias``,
        ``global_mean``), written and checksummed beside the factors
    """

    algorithm: str
    item_factors: np.ndarray
    user_factors: np.ndarray
    hyperparameters: dict
    bias_column: bool
    extras: dict = field(default_factory=dict)


def train_als(C: sp.csr_matrix, hp: AlsConfig, seed: int, progress: bool = False) -> Factors:
    """Implicit ALS on the confidence matrix, final user vectors solved exactly.

    Parameters
    ----------
    C : csr_matrix (users x items) of confidences ``c = 1 + alpha*log1p(strength)``
    hp : AlsConfig (factors, regularization, iterations)
    seed : random state of the initial factors
    progress : show ``implicit``'s tqdm bar over the sweeps
    """
    from implicit.cpu.als import AlternatingLeastSquares
    C = sp.csr_matrix(C, dtype=np.float32)
    with threadpool_limits(1, "blas"):
        model = AlternatingLeastSquares(factors=hp.factors, regularization=hp.regularization,
                                        alpha=1.0, iterations=hp.iterations, random_state=seed,
                                        use_cg=True)
        model.fit(C, show_progress=progress)
        Y = np.asarray(model.item_factors, dtype=np.float32)
        # exact final user step: x_u = (YtY + Y_u^T (C_u - I) Y_u + lambda I)^-1 Y_u^T C_u p_u
        X = FoldInSolver(Y, hp.regularization).solve(C.indptr, C.indices, C.data)
    return Factors("als", Y, np.asarray(X, dtype=np.float32),
                   {"factors": hp.factors, "regularization": hp.regularization,
                    "iterations": hp.iterations, "alpha_in_implicit": 1.0, "use_cg": True,
                    "exact_final_user_solve": True, "seed": seed},
                   bias_column=False)


def train_bpr(C: sp.csr_matrix, hp: BprConfig, seed: int, progress: bool = False) -> Factors:
    """BPR on the binary matrix ``p = [c > 0]``; factors ``k+1`` wide (bias column last).

    Parameters
    ----------
    C : csr_matrix (users x items); only its pattern is used
    hp : BprConfig (factors, learning_rate, regularization, iterations, foldin_regularization)
    seed : random state of the initial factors and the triple sampler
    progress : show ``implicit``'s tqdm bar over the epochs
    """
    from implicit.cpu.bpr import BayesianPersonalizedRanking
    binary = sp.csr_matrix(C, dtype=np.float32, copy=True)
    binary.data = np.ones_like(binary.data)  # BPR ranks observed over unobserved: p only
    with threadpool_limits(1, "blas"):
        # Hogwild SGD over threads is not reproducible; a search's trial (batch/tuning.py) asks
        # for one thread so that the same seed gives the same trials
        model = BayesianPersonalizedRanking(factors=hp.factors, learning_rate=hp.learning_rate,
                                            regularization=hp.regularization,
                                            iterations=hp.iterations, random_state=seed,
                                            num_threads=getattr(hp, "num_threads", 0))
        model.fit(binary, show_progress=progress)
    Y = np.asarray(model.item_factors, dtype=np.float32)   # (n_items, k+1): last = item bias
    X = np.asarray(model.user_factors, dtype=np.float32)   # (n_users, k+1): last = 1
    if Y.shape[1] != hp.factors + 1 or X.shape[1] != hp.factors + 1:
        raise RuntimeError(f"implicit BPR returned widths {Y.shape[1]}/{X.shape[1]}, expected "
                           f"{hp.factors + 1} (k factors + the bias column)")
    return Factors("bpr", Y, X,
                   {"factors": hp.factors, "learning_rate": hp.learning_rate,
                    "regularization": hp.regularization, "iterations": hp.iterations,
                    "foldin_regularization": hp.foldin_regularization, "seed": seed},
                   bias_column=True)


# algorithm name -> engine; the app trains cfg.trainer.algorithms through this table
TRAINERS: dict[str, Callable[..., Factors]] = {"als": train_als, "bpr": train_bpr}
