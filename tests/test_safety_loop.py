"""Closed-loop safety (#14): the plant, DTU fake, Reader, WriterMachine and controller core in one process."""
from __future__ import annotations

from services.dtu_poller.rating import LARGEST_W, RatingCheck, nominal_w
from tests.plant_loop import Loop, PlantInverter


def test_model_names_give_the_nominal_power():
    assert [nominal_w(n) for n in ("HM-400", "HMS-2000-4T", "HMT-2250-6T", "HMS-800W-2T", "Unknown", None)] == \
        [400, 2000, 2250, 800, None, None]


def test_a_rating_that_disagrees_is_implausible_and_the_conservative_bound_is_used():
    check = RatingCheck()
    assert check.rating(400, "HM-400", 0) == 400 and check.plausible
    assert check.rating(100, "HMS-2000-4T", 0) == LARGEST_W and not check.plausible
    assert check.rating(100, None, 2000) == 2000 and not check.plausible          # the configured bound
    check = RatingCheck()
    check.observe(40.0, 2.0, 100.0)                    # 40 W at 2 % of "100 W": at least 2000 W
    assert check.rating(100, None, 0) == LARGEST_W and not check.plausible
    check = RatingCheck()
    check.observe(300.0, 80.0, 400.0)
    check.observe(300.0, 10.0, 400.0)                  # the limit went down: the output still ramps
    assert check.rating(400, None, 0) == 400 and check.plausible


def test_the_cap_holds_in_watts_delivered_when_the_dtu_understates_the_rating():
    # a 2000 W inverter the DTU reports as rated 100 W, 3000 W import, cap 700 W
    loop = Loop([PlantInverter("1164a00a6340", true_w=2000.0, dtu_rating_w=100.0, limit_pct=1.0)],
                load_w=3000.0, max_feed_in=700)
    peak = max(loop.step() for _ in range(120))
    assert peak <= 700.0, peak
    assert loop.driver.last("ctrl.status")["alarms"]["inverter"] == 2
    assert max(w for _t, w in loop.delivered[-30:]) > 300          # still delivering, just within the cap
