"""common/vedbus.py on a private dbus-daemon: a real helper process exports a service, gdbus/dbus-send are the
clients, dbus-monitor watches the signals."""
from __future__ import annotations

import signal
import subprocess

import dbus
import pytest

from common import vedbus
from tests.support import wait_for
from tests.test_vedbus_helper import HelperService

pytestmark = pytest.mark.timeout(120)

IFACE = "com.victronenergy.BusItem"
NAME = "com.victronenergy.dcload.test_1"


def gcall(path: str, method: str, *args: str, dest: str = NAME) -> str:
    out = subprocess.run(["gdbus", "call", "--system", "--dest", dest, "--object-path", path,
                          "--method", f"{IFACE}.{method}", *args], capture_output=True, text=True, timeout=20)
    if out.returncode != 0:
        raise RuntimeError(out.stderr.strip())
    return out.stdout.strip()


def dsend_set(path: str, typed_value: str, dest: str = NAME) -> str:
    """The original README's SetValue, as dbus-send would do it off a GX."""
    out = subprocess.run(["dbus-send", "--system", "--print-reply", f"--dest={dest}", path,
                          f"{IFACE}.SetValue", f"variant:{typed_value}"], capture_output=True, text=True, timeout=20)
    assert out.returncode == 0, out.stderr
    return out.stdout.split("\n", 1)[1].strip()    # e.g. "int32 0"


def list_names() -> str:
    out = subprocess.run(["dbus-send", "--system", "--print-reply", "--dest=org.freedesktop.DBus",
                          "/org/freedesktop/DBus", "org.freedesktop.DBus.ListNames"],
                         capture_output=True, text=True, timeout=20)
    return out.stdout


SPEC = {
    "name": NAME,
    "mandatory": {"device_instance": 134, "product_name": "OpenDTU"},
    "paths": [
        ["/Int", 5], ["/Big", 5000000000], ["/Float", 1.5], ["/Bool", True], ["/Str", "abc"], ["/Invalid", None],
        ["/EmptyList", []], ["/Dc/0/Voltage", 52.5, {"unit": "V"}], ["/Dc/0/Current", None], ["/Dc/1/Voltage", 12.0],
        ["/MaxFeedIn", 700, {"writeable": True, "valuetype": "int", "min": 0, "max": 800}],
        ["/Ratio", 0.5, {"writeable": True, "valuetype": "float", "min": 0, "max": 1}],
        ["/CustomName", "Inverter", {"writeable": True, "valuetype": "str"}],
    ],
}


@pytest.fixture
def helper(private_dbus, procs, rundir):
    return HelperService(procs, rundir, SPEC)


def test_every_path_type_text_and_tree(helper):
    assert gcall("/Int", "GetValue") == "(<5>,)"
    assert gcall("/Big", "GetValue") == "(<int64 5000000000>,)"
    assert gcall("/Float", "GetValue") == "(<1.5>,)"
    assert gcall("/Bool", "GetValue") == "(<true>,)"
    assert gcall("/Str", "GetValue") == "(<'abc'>,)"
    assert gcall("/Invalid", "GetValue") == "(<@ai []>,)"          # invalid = empty int32 array
    assert gcall("/EmptyList", "GetValue") == "(<@au []>,)"        # an empty list is not invalid
    assert gcall("/Invalid", "GetText") == "('---',)"
    assert gcall("/Dc/0/Voltage", "GetText") == "('52.5V',)"
    assert gcall("/Dc/0/Voltage", "GetDescription", "en", "0") == "('',)"
    for path, value in (("/Mgmt/ProcessName", "'test_vedbus_helper'"), ("/Mgmt/ProcessVersion", "'1.0'"),
                        ("/Mgmt/Connection", "'test'"), ("/DeviceInstance", "134"), ("/ProductId", "0"),
                        ("/ProductName", "'OpenDTU'"), ("/FirmwareVersion", "0"), ("/HardwareVersion", "0"),
                        ("/Connected", "1")):
        assert gcall(path, "GetValue") == f"(<{value}>,)", path
    # intermediate nodes and / answer with dicts of relative paths
    assert gcall("/Dc/0", "GetValue") == "(<{'Current': <@ai []>, 'Voltage': <52.5>}>,)"
    assert gcall("/Dc", "GetValue") == "(<{'0/Current': <@ai []>, '0/Voltage': <52.5>, '1/Voltage': <12.0>}>,)"
    root = gcall("/", "GetValue")
    assert "'Dc/0/Voltage': <52.5>" in root and "'DeviceInstance': <134>" in root and "'Invalid': <@ai []>" in root
    texts = gcall("/", "GetText")
    assert "'Dc/0/Voltage': '52.5V'" in texts and "'Invalid': '---'" in texts
    items = gcall("/", "GetItems")
    assert "'/Dc/0/Current': {'Value': <@ai []>, 'Text': <'---'>}" in items
    assert "'/Big': {'Value': <int64 5000000000>, 'Text': <'5000000000'>}" in items
    assert items.count("'Value'") == 9 + len(SPEC["paths"])
    with pytest.raises(RuntimeError, match="UnknownObject|UnknownMethod"):
        gcall("/Nope", "GetValue")


def test_setvalue_return_codes_and_validation(helper):
    assert dsend_set("/MaxFeedIn", "int32:700") == "int32 0"            # unchanged: ok, validator not called
    assert "ACCEPTED" not in helper.proc.output()
    assert dsend_set("/MaxFeedIn", "int32:600") == "int32 0"
    helper.wait_output("ACCEPTED /MaxFeedIn 600")
    assert gcall("/MaxFeedIn", "GetValue") == "(<600>,)"
    assert dsend_set("/MaxFeedIn", "int32:900") == "int32 2"            # out of range: validator rejects
    assert dsend_set("/MaxFeedIn", "int32:-1") == "int32 2"
    assert gcall("/MaxFeedIn", "GetValue") == "(<600>,)"
    assert dsend_set("/MaxFeedIn", "string:500") == "int32 0"           # `dbus -y ... SetValue 500` sends a string
    assert gcall("/MaxFeedIn", "GetValue") == "(<500>,)"
    assert dsend_set("/MaxFeedIn", "double:450.0") == "int32 0"
    assert gcall("/MaxFeedIn", "GetValue") == "(<450>,)"                 # stored as int
    for bad in ("string:abc", "double:450.5", "boolean:true", "string:"):
        assert dsend_set("/MaxFeedIn", bad) == "int32 1", bad           # not coercible
    assert gcall("/MaxFeedIn", "GetValue") == "(<450>,)"
    assert dsend_set("/Ratio", "int32:1") == "int32 0"
    assert gcall("/Ratio", "GetValue") == "(<1.0>,)"
    assert dsend_set("/Ratio", "double:1.5") == "int32 2"
    assert dsend_set("/CustomName", "string:Balcony") == "int32 0"
    assert gcall("/CustomName", "GetValue") == "(<'Balcony'>,)"
    assert dsend_set("/CustomName", "int32:5") == "int32 1"
    assert dsend_set("/Int", "int32:6") == "int32 1"                    # not writeable
    assert dsend_set("/Dc/0/Voltage", "double:1.0") == "int32 1"
    assert gcall("/Int", "GetValue") == "(<5>,)"


def test_properties_changed_items_changed_and_batch(helper, procs):
    monitor = procs.start("dbus-monitor", ["dbus-monitor", "--system", f"type='signal',interface='{IFACE}'"])
    wait_for(lambda: "NameLost" in monitor.output() or "NameAcquired" in monitor.output(), 20,
             what="dbus-monitor ready")
    helper.send({"op": "set", "values": {"/Dc/0/Voltage": 53.25}})
    wait_for(lambda: monitor.output().count("member=ItemsChanged") == 1, 20, what="ItemsChanged")
    out = monitor.output()
    assert "path=/Dc/0/Voltage; interface=com.victronenergy.BusItem; member=PropertiesChanged" in out
    assert "path=/; interface=com.victronenergy.BusItem; member=ItemsChanged" in out
    assert "double 53.25" in out and 'string "53.25V"' in out
    # a value set to None goes out as an empty array with text ---
    helper.send({"op": "set", "values": {"/Dc/0/Voltage": None}})
    wait_for(lambda: monitor.output().count("member=ItemsChanged") == 2, 20, what="ItemsChanged for None")
    assert 'string "---"' in monitor.output()
    # setting the same value again emits nothing
    helper.send({"op": "set", "values": {"/Dc/0/Voltage": None}})
    # a batch: one ItemsChanged with both paths and no PropertiesChanged (velib's `with service as s:`)
    helper.send({"op": "batch", "values": {"/Int": 7, "/Str": "xyz"}})
    wait_for(lambda: monitor.output().count("member=ItemsChanged") == 3, 20, what="batched ItemsChanged")
    tail = monitor.output().split("member=ItemsChanged")[-1]
    assert '"/Int"' in tail and '"/Str"' in tail and "int32 7" in tail
    out = monitor.output()
    assert "path=/Int; interface=com.victronenergy.BusItem; member=PropertiesChanged" not in out
    assert out.count("member=PropertiesChanged") == 2          # the two single sets above
    # a SetValue from outside signals too
    assert dsend_set("/MaxFeedIn", "int32:300") == "int32 0"
    wait_for(lambda: monitor.output().count("member=ItemsChanged") == 4, 20, what="ItemsChanged after SetValue")
    assert "path=/MaxFeedIn; interface=com.victronenergy.BusItem; member=PropertiesChanged" in monitor.output()


def test_name_taken_remove_close_kill_and_session_bus_ignored(private_dbus, procs, rundir):
    # a stray session address must not move us off the system bus (an unreachable one would make us fail)
    first = HelperService(procs, rundir, SPEC, env={"DBUS_SESSION_BUS_ADDRESS": "unix:path=/nonexistent/bus"})
    assert NAME in list_names()
    second = HelperService(procs, rundir, SPEC, wait=False)
    second.wait_output(f"TAKEN {NAME}")
    wait_for(lambda: not second.proc.alive(), 20, what="second helper exits")
    assert second.proc.popen.returncode == 3
    assert gcall("/Int", "GetValue") == "(<5>,)"                     # the first one still answers
    # paths added and removed at run time, tree nodes follow
    first.send({"op": "add", "path": "/Extra/Deep/Value", "value": 1})
    assert gcall("/Extra", "GetValue") == "(<{'Deep/Value': <1>}>,)"
    first.send({"op": "remove", "path": "/Extra/Deep/Value"})
    for path in ("/Extra/Deep/Value", "/Extra/Deep", "/Extra"):
        with pytest.raises(RuntimeError):
            gcall(path, "GetValue")
    assert "Extra" not in gcall("/", "GetValue")
    # close releases the name while the process lives on
    first.send({"op": "close"})
    wait_for(lambda: NAME not in list_names(), 20, what="name released")
    assert first.proc.alive()
    # kill -9: the daemon drops the name with the connection
    third = HelperService(procs, rundir, SPEC)
    procs.stop(third.proc, signal.SIGKILL)
    wait_for(lambda: NAME not in list_names(), 20, what="name gone after kill -9")


def test_wrap_unwrap_coerce():
    assert vedbus.wrap(None).signature == "i" and len(vedbus.wrap(None)) == 0
    assert vedbus.wrap([]).signature == "u"
    assert isinstance(vedbus.wrap(True), dbus.Boolean)
    assert isinstance(vedbus.wrap(2 ** 31 - 1), dbus.Int32) and isinstance(vedbus.wrap(2 ** 31), dbus.Int64)
    assert isinstance(vedbus.wrap(-2 ** 31), dbus.Int32) and isinstance(vedbus.wrap(-2 ** 31 - 1), dbus.Int64)
    assert isinstance(vedbus.wrap(1.0), dbus.Double) and isinstance(vedbus.wrap("x"), dbus.String)
    for value in (None, [], 0, -5, 2 ** 40, 1.25, True, False, "text", [1, "a"], {"a": 1, "b": None}):
        back = vedbus.unwrap(vedbus.wrap(value))
        assert back == value and type(back) is type(value), value
    with pytest.raises(TypeError):
        vedbus.wrap(object())
    assert vedbus.coerce("700", int) == 700 and vedbus.coerce(700.0, int) == 700
    assert vedbus.coerce(3, float) == 3.0 and vedbus.coerce(" 2.5 ", float) == 2.5
    for value, kind in (("abc", int), (1.5, int), (True, int), (None, int), ("nan", float), ("inf", float),
                        (True, float), (5, str), ([], int)):
        with pytest.raises(ValueError):
            vedbus.coerce(value, kind)
