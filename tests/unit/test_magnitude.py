"""Events with a magnitude: strength adds weight x value (capped); bad values are refused."""

from __future__ import annotations

import math

import pytest

from recsys_stream.contracts.confidence import ConfidenceSettings
from recsys_stream.contracts.events import Event, InvalidEvent, decode_event, encode_event
from recsys_stream.contracts.user_state import UserHistory

NOW = 1_700_000_000_000


def _decode(type_, value, tenant="acme", scales=None):
    e = Event("e1", tenant, "u", "i", type_, value, NOW)
    return decode_event(e.key, encode_event(e), {"acme", "film"}, NOW, 10**9, 10**12, scales)


def test_strength_is_weight_times_magnitude_capped_per_tenant():
    s = ConfidenceSettings(weights={"view": 2.0, "purchase": 8.0, "rating": 1.0},
                           max_magnitude=100.0)
    assert s.event_strength("view") == 2.0                     # no value: magnitude 1
    assert s.event_strength("view", 30.0) == 60.0              # 30 s watched
    assert s.event_strength("purchase", 3.0) == 24.0           # a quantity of 3
    assert s.event_strength("view", 1e9) == 200.0              # capped at 100
    assert s.event_strength("rating", 4.5) == 4.5              # a rating is its value
    h = UserHistory("acme", "u")
    h.apply("a", "i", "view", 30.0, NOW, s, 500)
    h.apply("b", "i", "view", None, NOW, s, 500)
    assert h.items["i"][0] == pytest.approx(62.0)
    assert ConfidenceSettings.from_dict(s.to_dict()) == s      # travels in the manifest


@pytest.mark.parametrize("value", [-1.0, -1e-9, math.nan, math.inf, -math.inf])
def test_a_negative_nan_or_infinite_magnitude_is_refused_with_its_reason(value):
    for type_ in ("view", "click", "add_to_cart", "purchase", "like"):
        with pytest.raises(InvalidEvent) as e:
            _decode(type_, value)
        assert e.value.reason == "bad_value"
        assert "magnitude" in e.value.message or "finite" in e.value.message


def test_zero_and_positive_magnitudes_pass():
    assert _decode("view", 0.0).value == 0.0
    assert _decode("purchase", 2.0).value == 2.0
    assert _decode("view", None).value is None


def test_the_rating_scale_is_per_tenant():
    scales = {"film": (1.0, 10.0)}
    assert _decode("rating", 9.0, "film", scales).value == 9.0
    with pytest.raises(InvalidEvent, match="1..10"):
        _decode("rating", 0.5, "film", scales)
    with pytest.raises(InvalidEvent, match="0.5..5"):
        _decode("rating", 9.0, "acme", scales)   # acme keeps the default scale
    assert _decode("rating", 0.5, "acme", scales).value == 0.5
