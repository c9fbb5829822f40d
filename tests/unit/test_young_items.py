"""Young items (issue 30): the trainer's young slice, the stage's seeded first solve against
``implicit``'s own item step, and the worker's fold-in over replaced rows."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.sparse as sp

import recsys_stream.batch.app as app
from recsys_stream.batch.app import train_tenant
from recsys_stream.batch.data import build_matrix, from_events
from recsys_stream.contracts.foldin import FoldInSolver
from recsys_stream.contracts.model_store import ModelStore, ModelVerificationError, load_dir
from recsys_stream.contracts.pb import items_pb2
from recsys_stream.nearline.item_stage import StageModels
from recsys_stream.nearline.item_state import ItemRecord
from recsys_stream.synthetic import generate_events, make_world

THRESHOLD = 8


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """An ALS version trained by the trainer on synthetic events, and its training matrix."""
    from tests.conftest import make_config
    cfg = make_config(tmp_path_factory.mktemp("young"), young_item_users=THRESHOLD)
    cfg = cfg.replace(trainer={"algorithms": ("als",)})
    world = make_world("acme", 150, genres=4)
    events = generate_events(world, 200, 25, start_ms=1_700_000_000_000, seed=4)
    data = from_events("acme", events, cfg.tenant("acme").confidence, 500, 0.2)
    store = ModelStore(cfg.model_store)
    orig, app.announce = app.announce, lambda *a: None
    try:
        (res,) = train_tenant(cfg, data, store)
    finally:
        app.announce = orig
    assert res["rejected"] == []
    full = build_matrix(data.histories, cfg.tenant("acme").confidence)
    return cfg, store.load("acme", "als"), full


def test_the_young_slice_is_the_training_matrix_columns_of_its_items(trained):
    _, art, full = trained
    assert list(art.item_ids) == list(full.item_ids)
    assert list(art.user_ids) == list(full.user_ids)
    users_per_item = np.diff(full.C.tocsc().indptr)
    want = np.flatnonzero((users_per_item > 0) & (users_per_item < THRESHOLD))
    assert len(want) and len(want) < len(art.item_ids)  # some young, not all
    np.testing.assert_array_equal(art.young.items, want)
    C = full.C.tocsc()
    for j, row in enumerate(art.young.items):
        users, conf = art.young.column(row)
        col = C[:, row]
        np.testing.assert_array_equal(users, np.sort(col.indices))
        np.testing.assert_allclose(conf, col.toarray().ravel()[users], rtol=1e-6)
    assert art.manifest["young_item_users"] == THRESHOLD
    assert art.manifest["young_items"] == len(want)
    assert {f"{n}.npy" for n in ("young_items", "young_indptr", "young_users",
                                 "young_confidences")} <= set(art.manifest["files"])


def test_a_tampered_young_slice_is_never_loaded(trained, tmp_path):
    _, art, _ = trained
    import shutil
    copy = tmp_path / "v"
    shutil.copytree(art.path, copy)
    users = np.load(copy / "young_users.npy")
    users[0] = len(art.user_ids) + 5  # a user row the version does not have
    np.save(copy / "young_users.npy", users)
    with pytest.raises(ModelVerificationError, match="young_users"):
        load_dir(copy)
    # checksums re-signed: the shape check still refuses it
    from recsys_stream.contracts.model_store import sha256_file
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["files"]["young_users.npy"] = sha256_file(copy / "young_users.npy")
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelVerificationError, match="young_users are not rows"):
        load_dir(copy)


def test_the_stage_s_first_solve_of_a_young_item_is_implicit_s_item_step(trained):
    """Seeded from the slice with no new user, the solve equals ``implicit``'s
    ``recalculate_item`` with the version's user factors (to 1e-4)."""
    from implicit.cpu.als import AlternatingLeastSquares
    cfg, art, _ = trained
    model = StageModels(cfg).get("acme", "als", art.version)
    lam = art.manifest["hyperparameters"]["regularization"]
    ref = AlternatingLeastSquares(factors=art.item_factors.shape[1], regularization=lam,
                                  alpha=1.0)
    ref.user_factors = np.array(art.user_factors)
    ref.item_factors = np.array(art.item_factors)
    rows = art.young.items[:25]
    got, want = [], []
    for row in rows:
        item = str(art.item_ids[row])
        st = ItemRecord("acme", "als", item)
        st.seed(art.version, model.seed(item))
        assert st.young and len(st.users) < THRESHOLD
        X, c = st.arrays()
        got.append(model.solver.solve_one(X, c))
        users, conf = art.young.column(row)
        item_users = sp.csr_matrix((conf, (np.zeros(len(users), int), users)),
                                   shape=(1, len(art.user_ids)))
        want.append(np.asarray(ref.recalculate_item(0, item_users)).ravel())
    np.testing.assert_allclose(np.array(got), np.array(want), atol=1e-4)
    # and it is (close to) the version's own row: the trainer's last item step saw the same
    err = np.abs(np.array(got) - art.item_factors[rows]).max()
    assert err < 0.1 * np.abs(art.item_factors[rows]).max()


def test_a_record_of_a_training_user_replaces_the_seeded_entry(trained):
    cfg, art, _ = trained
    model = StageModels(cfg).get("acme", "als", art.version)
    item = str(art.item_ids[art.young.items[0]])
    seed = model.seed(item)
    st = ItemRecord("acme", "als", item)
    st.seed(art.version, seed)
    user = next(iter(seed))
    x = np.full(art.user_factors.shape[1], 0.5, np.float32)
    rec = items_pb2.ItemInteraction(tenant="acme", item_id=item, user_id=user, algorithm="als",
                                    model_version=art.version, confidence=9.0,
                                    user_vector=x.tolist())
    assert st.apply(rec, 0, 0, 200)
    assert len(st.users) == len(seed) and st.users[user][0] == 9.0
    np.testing.assert_array_equal(st.users[user][1], x)
    again = ItemRecord.decode(st.encode())
    assert again.young and list(again.users) == list(st.users)
    # a record of a newer version that does not know the item young starts it afresh
    rec.model_version = art.version + 1
    assert st.apply(rec, 0, 1, 200) and not st.young and list(st.users) == [user]


@pytest.mark.parametrize("bias", [False, True])
def test_replaced_rows_solve_as_a_solver_built_on_the_replaced_factors(bias):
    rng = np.random.default_rng(1)
    Y = rng.normal(size=(40, 5 + bias))
    rows = np.array([3, 17, 30])
    new = rng.normal(size=(3, 5 + bias))
    Y2 = Y.copy()
    Y2[rows] = new
    got = FoldInSolver(Y, 0.3, bias_column=bias).replaced(rows, new).extended(Y[:2])
    want = FoldInSolver(np.vstack([Y2, Y[:2]]), 0.3, bias_column=bias)
    C = sp.random(20, 42, density=0.2, random_state=2, format="csr")
    C.data = 1 + 3 * C.data
    np.testing.assert_allclose(got.solve(C.indptr, C.indices, C.data),
                               want.solve(C.indptr, C.indices, C.data), atol=1e-8)
