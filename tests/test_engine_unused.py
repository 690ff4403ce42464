"""Promise 4: capacity a car does not use goes to others; a car drawing too much is flagged."""

from __future__ import annotations

import math

from loadmgmt.engine import Policy, Session, Zone, allocate, session_ceiling

NOW = 1_700_000_000.0
POLICY = Policy(unused_margin_a=2.0, overdraw_tolerance_a=2.0, last_rotation_at=NOW)
SITE = [Zone(id="site", capacity_a=(40.0, 40.0, 40.0))]


def car(sid: str, **kwargs) -> Session:
    kwargs.setdefault("max_a", 32.0)
    return Session(id=sid, zone_id="site", **kwargs)


def test_it_gives_capacity_a_car_does_not_draw_to_the_others():
    sessions = [car("slow", measured_a=10.0, offered_a=20.0), car("hungry")]
    result = allocate(SITE, sessions, POLICY, NOW)
    assert result.limits["slow"].limit_a == 12.0  # draw + margin
    assert result.limits["slow"].binding == "measured draw"
    assert result.limits["slow"].max_a == 12.0
    assert result.limits["hungry"].limit_a == 28.0


def test_it_keeps_offering_the_full_share_to_a_car_that_follows_its_offer():
    sessions = [car("follows", measured_a=19.6, offered_a=20.0), car("hungry")]
    result = allocate(SITE, sessions, POLICY, NOW)
    assert result.limits["follows"].limit_a == 20.0


def test_it_keeps_a_capped_car_capped_while_its_draw_stays_put():
    # Last tick offered draw + margin; the car still draws 10 A: no jump back to the full share.
    assert session_ceiling(car("slow", measured_a=10.0, offered_a=12.0), POLICY) == (12.0, "measured draw")


def test_it_releases_the_cap_when_the_car_ramps_up():
    assert session_ceiling(car("ramping", measured_a=11.5, offered_a=12.0), POLICY) == (32.0, "session max")


def test_it_never_caps_below_the_minimum():
    assert session_ceiling(car("trickle", measured_a=1.0, offered_a=16.0), POLICY) == (6.0, "measured draw")


def test_it_compares_with_the_ceiling_when_the_offer_is_unknown():
    assert session_ceiling(car("new", measured_a=10.0), POLICY) == (12.0, "measured draw")


def test_it_ignores_the_draw_of_a_paused_session_and_an_unknown_draw():
    assert session_ceiling(car("p", paused=True, measured_a=0.0, offered_a=0.0), POLICY) == (32.0, "session max")
    assert session_ceiling(car("n", measured_a=math.nan, offered_a=20.0), POLICY) == (32.0, "session max")


def test_it_flags_a_car_drawing_more_than_offered_plus_tolerance():
    sessions = [car("over", measured_a=18.1, offered_a=16.0), car("within", measured_a=17.9, offered_a=16.0)]
    result = allocate(SITE, sessions, POLICY, NOW)
    assert result.limits["over"].overdraw is True
    assert result.limits["within"].overdraw is False


def test_it_flags_a_paused_car_that_keeps_drawing():
    sessions = [car("stuck", paused=True, measured_a=9.0, offered_a=0.0)]
    result = allocate([Zone(id="site", capacity_a=(0.0, 0.0, 0.0))], sessions, POLICY, NOW)
    assert result.limits["stuck"].paused and result.limits["stuck"].overdraw


def test_it_compares_with_the_new_limit_when_the_offer_is_unknown():
    result = allocate(SITE, [car("a", measured_a=45.0)], POLICY, NOW)
    assert result.limits["a"].limit_a == 32.0
    assert result.limits["a"].overdraw is True
