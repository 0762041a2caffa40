"""A real process exporting one VeDbusService, driven through a FIFO (used by the vedbus and venus_publisher tests).

    python -m tests.test_vedbus_helper SPEC_JSON FIFO_PATH

SPEC: {"name": "com.victronenergy.battery.t1",
       "mandatory": {"device_instance": 512, "product_name": "Test battery"}   (optional),
       "paths": [["/Soc", 55.0], ["/MaxFeedIn", 700, {"writeable": true, "valuetype": "int", "min": 0, "max": 800}]]}
Commands, one JSON object per line written to the FIFO:
    {"op": "set", "values": {"/Soc": 56.0}}     each value set on its own (PropertiesChanged + ItemsChanged)
    {"op": "batch", "values": {...}}            all in one `with svc:` block (one ItemsChanged)
    {"op": "add", "path": "/X", "value": 1}     {"op": "remove", "path": "/X"}
    {"op": "close"}                             release the name (process stays)
    {"op": "exit"}
stdout: "READY <name>" once registered, "ACCEPTED <path> <json value>" for each accepted SetValue,
"TAKEN <name>" (exit 3) when the name is owned by someone else.

There are no tests in this module; it only lives here because the test files own it.
"""
from __future__ import annotations

import json
import os
import sys


def _valuetype(name):
    return {"int": int, "float": float, "str": str, None: None}[name]


def main(argv: list[str]) -> int:
    from gi.repository import GLib

    from common import vedbus

    spec = json.loads(argv[0])
    fifo_path = argv[1]
    vedbus.ensure_mainloop()
    svc = vedbus.VeDbusService(spec["name"])
    mandatory = spec.get("mandatory")
    if mandatory is not None:
        svc.add_mandatory_paths(mandatory.get("process_name", "test_vedbus_helper"), "1.0", "test",
                                mandatory.get("device_instance", 0), mandatory.get("product_id", 0),
                                mandatory.get("product_name", "Test"))
    for entry in spec.get("paths", []):
        path, value = entry[0], entry[1]
        opts = entry[2] if len(entry) > 2 else {}

        def validator(p, v, lo=opts.get("min"), hi=opts.get("max")):
            ok = (lo is None or v >= lo) and (hi is None or v <= hi)
            if ok:
                print(f"ACCEPTED {p} {json.dumps(v)}", flush=True)
            return ok

        svc.add_path(path, value, writeable=opts.get("writeable", False),
                     on_change=validator if opts.get("writeable") else None,
                     valuetype=_valuetype(opts.get("valuetype")),
                     gettext=(lambda p, v, unit=opts["unit"]: f"{v}{unit}") if "unit" in opts else None)
    try:
        svc.register()
    except vedbus.NameTakenError:
        print(f"TAKEN {spec['name']}", flush=True)
        return 3
    print(f"READY {spec['name']}", flush=True)

    loop = GLib.MainLoop()
    fd = os.open(fifo_path, os.O_RDWR | os.O_NONBLOCK)
    pending = b""

    def on_input(_fd, _cond):
        nonlocal pending
        try:
            pending += os.read(fd, 65536)
        except BlockingIOError:
            return True
        while b"\n" in pending:
            line, pending = pending.split(b"\n", 1)
            if line.strip():
                handle(json.loads(line))
        return True

    def handle(cmd):
        op = cmd["op"]
        if op == "set":
            for path, value in cmd["values"].items():
                svc[path] = value
        elif op == "batch":
            with svc:
                for path, value in cmd["values"].items():
                    svc[path] = value
        elif op == "add":
            svc.add_path(cmd["path"], cmd.get("value"))
        elif op == "remove":
            svc.remove_path(cmd["path"])
        elif op == "close":
            svc.close()
            print("CLOSED", flush=True)
        elif op == "exit":
            loop.quit()
        print(f"DONE {op}", flush=True)

    GLib.io_add_watch(fd, GLib.IO_IN, on_input)
    GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, 15, loop.quit)
    loop.run()
    svc.close()
    return 0


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    raise SystemExit(main(sys.argv[1:]))


# ---------------------------------------------------------------- used by the tests to drive the helper

class HelperService:
    """Starts the helper as a real process (via the `procs` fixture) and drives it through its FIFO."""

    def __init__(self, procs, folder: str, spec: dict, wait: bool = True, label: str = "vedbus_helper",
                 env: dict | None = None):
        self._n = next(_COUNTER)
        self.spec = spec
        self.fifo = os.path.join(folder, f"helper{self._n}.fifo")
        os.mkfifo(self.fifo)
        self.proc = procs.python(label, "tests.test_vedbus_helper", json.dumps(spec), self.fifo, env=env)
        self.procs = procs
        if wait:
            self.wait_output(f"READY {spec['name']}")

    def wait_output(self, text: str, timeout_s: float = 20.0) -> str:
        from tests.support import wait_for
        return wait_for(lambda: text in self.proc.output() or (not self.proc.alive() and text in self.proc.output()),
                        timeout_s, what=f"{text!r} from {self.spec['name']} (output: {self.proc.output()[-500:]!r})")

    def send(self, cmd: dict, wait: bool = True) -> None:
        before = self.proc.output().count(f"DONE {cmd['op']}")
        with open(self.fifo, "w") as handle:
            handle.write(json.dumps(cmd) + "\n")
        if wait:
            from tests.support import wait_for
            wait_for(lambda: self.proc.output().count(f"DONE {cmd['op']}") > before, 20,
                     what=f"helper to do {cmd}")

    def stop(self, sig=None) -> None:
        import signal as _signal
        self.procs.stop(self.proc, sig or _signal.SIGTERM)


def _counter():
    n = 0
    while True:
        n += 1
        yield n


_COUNTER = _counter()
