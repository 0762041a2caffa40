"""The project law's spread on plants with mixed inverters: hysteresis on the active count, and the make-up for
parked inverters that deliver nothing at the minimum percent."""
from services.controller import project_law
from services.controller.model import Inverter
from services.controller.params import Params

P = Params()                 # min 1 %, active_min 10 %, quantum 1 %
SIZES = [600.0, 2000.0, 2000.0]


def test_the_active_count_changes_only_beyond_the_hysteresis():
    # 2 active from 60 + 200 + 20 = 280 W, 3 active from 60 + 200 + 200 = 460 W (10 % each, the rest at 1 %)
    def active(total_w, now_active):
        return sum(pct > P.min_percent for pct in project_law._spread_sticky(total_w, SIZES, now_active, P))
    assert active(450.0, 3) == 3            # spread alone parks the third (450 < 460), >= 75 % of 460 keeps it
    assert active(330.0, 3) == 2            # below 345 W: parked
    assert active(322.0, 1) == 1            # spread alone wakes the second (322 >= 280), < 125 % of 280 waits
    assert active(400.0, 1) == 2            # beyond 350 W: woken
    assert active(450.0, 2) == active(450.0, 1) == 2
    # the sum is the total rounded to the nearest quantum: never more than half of one inverter's quantum off
    # (1 % of 2000 W: 10 W), never systematically short as a floor would be
    for total in (300.0, 450.0, 520.0, 700.0, 305.0, 453.0):
        for now_active in (1, 2, 3):
            pcts = project_law._spread_sticky(total, SIZES, now_active, P)
            assert abs(sum(p * m / 100.0 for p, m in zip(pcts, SIZES)) - total) <= 10.0 + 1e-6


def _inv(serial, max_w, cmd_pct, ac_w):
    inv = Inverter(serial=serial)
    inv.max_power_w, inv.cmd_pct, inv.ac_power_w = max_w, cmd_pct, ac_w
    return inv


def test_parked_inverters_that_give_nothing_are_made_up_for():
    invs = [_inv("A", 1000.0, 25.0, 250.0), _inv("B", 2000.0, 1.0, 0.0), _inv("C", 1000.0, 1.0, 9.0)]
    short_w, active = project_law._parked_short(invs, [25.0, 1.0, 1.0], P)
    assert (short_w, active) == (20.0, 1)                      # B gives 0 W of its 20 W; C delivers its 10 W
    assert project_law._parked_short(invs, [10.0, 10.0, 10.0], P) == (0.0, 3)     # none parked
