"""An experiment arm pinned to a kept model version is served that version on the real server;
an arm pinned to a version the store does not keep falls back to the current one, counted."""

from __future__ import annotations

import dataclasses

import pytest

from recsys_stream.serving import arms
from recsys_stream.serving.pinned import PINNED_FALLBACKS
from tests.integration.test_server import _running, write_model

pytestmark = pytest.mark.integration


def test_pinned_arm_serves_its_kept_version_and_falls_back_when_it_is_gone(cfg):
    v1, _ = write_model(cfg, seed=0)  # items acme-0-*
    v2, _ = write_model(cfg, seed=1)  # items acme-1-*: CURRENT
    exp = {"name": "pin", "arms": [{"name": "current", "share": 0.34},
                                   {"name": "old", "share": 0.33, "model_version": v1},
                                   {"name": "gone", "share": 0.33, "model_version": 99}]}
    tenants = dict(cfg.tenants)
    tenants["acme"] = dataclasses.replace(tenants["acme"], experiments=(exp,))
    cfg = cfg.replace(tenants=tenants)
    fallbacks = PINNED_FALLBACKS.labels("acme", "pin", "gone")
    before = fallbacks._value.get()
    seen = {"current": 0, "old": 0, "gone": 0}
    with _running(cfg) as (c, _, client):
        for n in range(40):
            user = f"visitor-{n}"
            arm = arms.assign(c.tenant("acme"), user).arm
            a = client.recommend(user, k=5)
            assert a.arm == arm
            want = v1 if arm == "old" else v2
            assert a.model_version == want, (arm, a.model_version)
            prefix = "acme-0-" if want == v1 else "acme-1-"
            assert all(i.item_id.startswith(prefix) for i in a.items), (arm, a.items)
            ranked = client.rank_items(["acme-0-1", "acme-1-1"], user_id=user)
            assert ranked.model_version == want
            seen[arm] += 1
    assert min(seen.values()) > 0, seen
    # every answer of the "gone" arm (a Recommend and a RankItems each) was counted, and
    # _running's readiness probe (one answer for p1) when p1 is in that arm
    probe = arms.assign(cfg.tenant("acme"), "p1").arm == "gone"
    assert fallbacks._value.get() - before == 2 * seen["gone"] + probe
