"""The state file: `<state_dir>/controller-state.json`, written atomically (temp + fsync + rename).

A corrupt file is never overwritten: it is moved aside as `<name>.corrupt-<UTC time>`, the controller starts from
its defaults and the file is written again only once something changes (`save` skips the first, unchanged state).
The file is opened without following symlinks; anything but a regular file is refused, never read (a FIFO would
block the start)."""
from __future__ import annotations

import json
import logging
import os
import time
from typing import Callable, Optional

from common.safefile import NotRegularFile, UnusableFile, read_regular, write_atomic

FILE_NAME = "controller-state.json"
MAX_BYTES = 1_000_000


class StateFileError(Exception):
    """The state file exists but cannot be used."""


class StateStore:
    def __init__(self, folder: str, log: Optional[logging.Logger] = None, wall: Callable[[], float] = time.time):
        self.folder = folder
        self.path = os.path.join(folder, FILE_NAME)
        self.log = log or logging.getLogger(__name__)
        self.wall = wall
        self.hold_first_save = False     # set when the file was unusable: the defaults alone are not written

    def load(self) -> Optional[dict]:
        """The saved dict, or None when there is none or it is unusable (logged once; defaults are used)."""
        try:
            raw = read_regular(self.path, MAX_BYTES)
        except FileNotFoundError:
            self.log.info("state file %s not found: starting from the config values", self.path)
            return None
        except NotRegularFile as exc:
            return self._unusable(str(exc), move=False)
        except UnusableFile as exc:
            return self._unusable(str(exc), move=True)
        except OSError as exc:
            why = "a symbolic link" if exc.errno == 40 else exc.strerror   # ELOOP from O_NOFOLLOW
            return self._unusable(f"unreadable: {why}", move=False)
        try:
            data = json.loads(raw.decode("utf-8"))
            if not isinstance(data, dict):
                raise StateFileError("not a JSON object")
        except (ValueError, StateFileError, RecursionError) as exc:     # UnicodeDecodeError is a ValueError
            return self._unusable(str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__, move=True)
        return data

    def _unusable(self, why: str, move: bool) -> None:
        self.hold_first_save = True
        kept = ""
        if move:
            aside = f"{self.path}.corrupt-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime(self.wall()))}"
            try:
                os.rename(self.path, aside)
                kept = f"; kept as {aside}"
            except OSError as exc:
                kept = f"; cannot move it aside ({exc.strerror})"
        self.log.error("state file %s unusable (%s)%s: starting from the config values, nothing written until a "
                       "setting or the learned state changes", self.path, why, kept)
        return None

    def save(self, data: dict) -> bool:
        if self.hold_first_save:
            self.hold_first_save = False
            return True       # the defaults after an unusable file: not worth a write
        try:
            write_atomic(self.path, json.dumps(data, sort_keys=True))
            return True
        except OSError as exc:
            self.log.error("cannot write the state file %s: %s", self.path, exc.strerror)
            return False
