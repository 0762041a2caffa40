"""The model table: which Shelly is which meter, from `GET /shelly` (never needs a password)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from services.shelly_poller.device import require_dict
from services.shelly_poller.exceptions import ShellyInvalidResponse

# Gen2+ model id prefixes -> meter component
EM1_MODELS = ("SPEM-002", "S3EM-002", "S4EM-001")          # Pro EM, EM Gen3, EM Gen4: EM1 per channel
EM_MODELS = ("SPEM-003", "S3EM-003")                       # Pro 3EM, 3EM-63 Gen3: EM, three phases
EM1_APPS = ("ProEM", "EMG3", "EMG4", "EMMiniG4")
EM_APPS = ("Pro3EM", "Pro3EM63", "S3EM63")
GEN1_METERS = {"SHEM": False, "SHEM-3": True}              # Gen1 type -> three_phase


@dataclass(frozen=True)
class DeviceInfo:
    gen: int
    model: str                    # Gen1 `type`, Gen2 `model`
    device_id: Optional[str] = None
    auth_required: Optional[bool] = None
    profile: Optional[str] = None
    app: Optional[str] = None

    @property
    def meter_component(self) -> Optional[str]:
        """Gen1: 'gen1' / 'gen1_3phase'; Gen2: 'em' or 'em1'; None if this is no known meter."""
        if self.gen == 1:
            if self.model in GEN1_METERS:
                return "gen1_3phase" if GEN1_METERS[self.model] else "gen1"
            return None
        if self.profile == "monophase":
            return "em1"
        if self.profile == "triphase":
            return "em"
        if self.model.startswith(EM_MODELS) or self.app in EM_APPS:
            return "em"
        if self.model.startswith(EM1_MODELS) or self.app in EM1_APPS:
            return "em1"
        return None


def parse_device_info(host: str, body: Any) -> DeviceInfo:
    """`GET /shelly`: Gen1 has no `gen` key (aioshelly: `info.get("gen", 1)`)."""
    body = require_dict(host, body, "/shelly")
    gen = body.get("gen", 1)
    if isinstance(gen, bool) or not isinstance(gen, int) or not 1 <= gen <= 9:
        raise ShellyInvalidResponse(host, "/shelly: gen is not a generation (1..9)")
    if gen == 1:
        model = body.get("type")
        auth = body.get("auth")
    else:
        model = body.get("model")
        auth = body.get("auth_en")
    if not isinstance(model, str) or not model:
        raise ShellyInvalidResponse(host, "/shelly: no model/type")

    def opt_str(key):
        value = body.get(key)
        return value if isinstance(value, str) and value else None

    return DeviceInfo(gen, model[:64], opt_str("id"), auth if isinstance(auth, bool) else None,
                      opt_str("profile"), opt_str("app"))
