"""A one-time step: set each inverter's PERSISTENT limit to the minimum, so that an inverter that restarts without
the controller (after a power cut, an inverter restart, a DTU reboot) comes up low instead of at full power.

    python -m services.dtu_poller --config config.ini --set-persistent-minimum

Never from the control loop: a persistent limit is written to the inverter's memory, which wears (the loop only
sends non-persistent limits). The limit type for "relative, persistent" is 257 up to OpenDTU v25.5.10 and 3 from
v25.9.11 (OpenDTU commit 8cab3335; OpenDTU-OnBattery from 2025.09.16); the firmware version decides, and an unknown
version is refused rather than guessed (a wrong type is rejected with code 5003 anyway).
"""
from __future__ import annotations

import logging
import re
import time
from typing import Optional

from services.dtu_poller.client import DtuError, OpenDtuClient

ACK_WAIT_S = 15.0


def persistent_relative_type(firmware: Optional[str]) -> Optional[int]:
    """257 (<= v25.5.10) or 3 (>= v25.9.11); None when the version cannot be read."""
    numbers = [int(n) for n in re.findall(r"\d+", firmware or "")[:3]]
    if len(numbers) < 3:
        return None
    if numbers[0] >= 2000:                        # OpenDTU-OnBattery: 2025.09.16
        numbers[0] -= 2000
    return 3 if tuple(numbers) >= (25, 9, 11) else 257


def main(cfg, logger: logging.Logger) -> int:
    o = cfg.opendtu
    min_pct = float(cfg.control.min_percent)
    if not o.password:
        logger.error("--set-persistent-minimum needs the admin password in [opendtu] password")
        return 1
    client = OpenDtuClient(o.host, o.username, o.password, o.timeout)
    try:
        firmware = client.firmware()
        limit_type = persistent_relative_type(firmware)
        if limit_type is None:
            logger.error("OpenDTU firmware version %r not understood: nothing sent", firmware)
            return 1
        serials = [inv.serial for inv in client.livedata_summary()]
    except DtuError as exc:
        logger.error("OpenDTU at %s: %s: %s", client.url, exc.kind, exc)
        return 1
    failed = 0
    for serial in serials:
        try:
            client.post_command("/api/limit/config", {"serial": serial, "limit_type": limit_type,
                                                      "limit_value": min_pct})
            ok = _wait_ack(client, serial, min_pct)
        except DtuError as exc:
            logger.error("inverter %s: persistent limit %g %% not set (%s: %s)", serial, min_pct, exc.kind, exc)
            failed += 1
            continue
        if ok:
            logger.info("inverter %s: persistent limit set to %g %%", serial, min_pct)
        else:
            logger.error("inverter %s: persistent limit %g %% not confirmed within %g s (commands disabled in "
                         "OpenDTU, or not reachable?)", serial, min_pct, ACK_WAIT_S)
            failed += 1
    logger.info("%d of %d inverter(s) now start at %g %% after a restart", len(serials) - failed, len(serials),
                min_pct)
    return 1 if failed or not serials else 0


def _wait_ack(client: OpenDtuClient, serial: str, pct: float) -> bool:
    deadline = time.monotonic() + ACK_WAIT_S
    while time.monotonic() < deadline:
        status = client.limit_status().get(serial)
        if status is not None and status.status == "Failure":
            return False
        if status is not None and status.status == "Ok" and status.limit_relative_pct is not None \
                and abs(status.limit_relative_pct - pct) <= 1.0:
            return True
        time.sleep(0.5)
    return False
