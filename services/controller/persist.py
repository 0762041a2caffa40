"""The state file: `<state_dir>/controller-state.json`, written atomically (temp + fsync + rename)."""
from __future__ import annotations

import json
import logging
import os
from typing import Optional

FILE_NAME = "controller-state.json"


class StateFileError(Exception):
    """The state file exists but cannot be used."""


class StateStore:
    def __init__(self, folder: str, log: Optional[logging.Logger] = None):
        self.folder = folder
        self.path = os.path.join(folder, FILE_NAME)
        self.log = log or logging.getLogger(__name__)

    def load(self) -> Optional[dict]:
        """The saved dict, or None when there is none or it is corrupt (logged; defaults are used)."""
        try:
            with open(self.path, "rb") as handle:
                raw = handle.read(1_000_000)
        except FileNotFoundError:
            self.log.info("state file %s not found: starting from the config values", self.path)
            return None
        except OSError as exc:
            self.log.error("state file %s unreadable (%s): starting from the config values", self.path,
                           exc.strerror)
            return None
        try:
            data = json.loads(raw.decode("utf-8"))
            if not isinstance(data, dict):
                raise StateFileError("not a JSON object")
        except (UnicodeDecodeError, ValueError, StateFileError) as exc:
            self.log.error("state file %s corrupt (%s): replaced by defaults", self.path,
                           str(exc).splitlines()[0][:120])
            return None
        return data

    def save(self, data: dict) -> bool:
        tmp = self.path + ".tmp"
        try:
            os.makedirs(self.folder, exist_ok=True)
            with open(tmp, "w", encoding="utf-8") as handle:
                json.dump(data, handle, sort_keys=True)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.path)
            try:
                fd = os.open(self.folder, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
            except OSError:
                pass
            return True
        except OSError as exc:
            self.log.error("cannot write the state file %s: %s", self.path, exc.strerror)
            return False
