"""The AhoyDTU bench mode (bench/ahoy.py): the product's AhoyClient, poller and writer in simulated time against
sim.ahoy's model; and the rating check it showed too quick to doubt behind AhoyDTU's slow refresh."""
from __future__ import annotations

import numpy as np
import pytest

from bench.ahoy import AhoyLoop
from bench.loop import ClosedLoop
from bench.plantcfg import load_plant
from bench.policies import make_policy
from bench.run import quiet_product_logs, run_policies
from common import messages as M
from services.dtu_poller.rating import LARGEST_W, RatingCheck
from sim.loadgen import Trace

HM600 = ("HM-600", 600.0)


def _step_trace(duration_s: int = 240, step_at_s: int = 60, before_w: float = 150.0, after_w: float = 650.0):
    load = [before_w] * step_at_s + [after_w] * (duration_s - step_at_s)
    return Trace("step", load, [0.0] * duration_s)


def _observe(check: RatingCheck, samples, vouched: bool) -> list:
    verdicts = []
    for limit_pct, ac_w in samples:
        check.observe(ac_w, limit_pct, HM600[1], vouched)
        verdicts.append((check.rating(HM600[1], HM600[0] if vouched else None, 0), check.plausible))
    return verdicts


def test_a_vouched_rating_survives_one_sample_above_a_limit_it_was_not_at_in_between():
    """Recorded on the bench (hob, dead time 5 s, AhoyDTU refreshing every 15 s): the read-back showed 20 % for
    three samples, but between two refreshes the limit went up and back down to 20 %, and the sample caught the
    output still coming down (186 W > 1.5 x 120 W). That alone made a 600 W HM-600 a 3000 W inverter (alarm, and
    the controller commanding 5 x less than it meant)."""
    vouched = RatingCheck.vouched(HM600[1], HM600[0], 0)
    assert vouched
    history = [(66.0, 311.2), (24.0, 169.2), (19.0, 125.1), (20.0, 136.6), (20.0, 122.4), (20.0, 185.9),
               (20.0, 121.0)]
    verdicts = _observe(RatingCheck(), history, vouched)
    assert all(v == (600.0, True) for v in verdicts), verdicts


def test_two_samples_in_a_row_far_above_the_limit_still_doubt_a_vouched_rating():
    check = RatingCheck()
    history = [(20.0, 120.0)] * 4 + [(20.0, 185.9), (20.0, 190.0)]
    verdicts = _observe(check, history, vouched=True)
    assert verdicts[-2] == (600.0, True)
    assert verdicts[-1] == (LARGEST_W, False)


def test_a_rating_nothing_vouches_for_is_still_doubted_at_the_first_settled_sample_above_the_limit():
    verdicts = _observe(RatingCheck(), [(20.0, 120.0)] * 4 + [(20.0, 185.9)], vouched=False)
    assert verdicts[-1][1] is False and verdicts[-1][0] > 600.0
