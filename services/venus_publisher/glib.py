"""The few GLib main-loop calls venus_publisher makes, straight from libglib-2.0 through ctypes.

Why not `from gi.repository import GLib`: PyGObject's GLib overrides import asyncio (and with it ssl, socket,
selectors, ...) for a signal helper we do not use; that alone costs about 5 MiB of memory per process, a third of
venus_publisher's (issue 16: the whole add-on must fit a GX). dbus-python's `DBusGMainLoop` needs only GLib's
default main context, which this module runs; libglib is loaded already by dbus-python's GLib binding.

Same names and behaviour as PyGObject for what is used: `MainLoop().run()/.quit()`, `timeout_add(ms, f, *args)`,
`idle_add(f, *args)`, `io_add_watch(fd, priority, condition, f, *args)` (f gets fd and condition),
`unix_signal_add(priority, signum, f, *args)`, `source_remove(id)`. A callback returning a true value keeps its
source, a false one removes it. An exception in a callback is logged with its traceback and removes the source
(PyGObject prints it; a removed source is what its false result would do).
"""
from __future__ import annotations

import ctypes
import logging
from typing import Any, Callable

log = logging.getLogger(__name__)

PRIORITY_HIGH = -100
PRIORITY_DEFAULT = 0
PRIORITY_DEFAULT_IDLE = 200
IO_IN = 1

_lib = ctypes.CDLL("libglib-2.0.so.0")

_SourceFunc = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p)
_IOFunc = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p)
_DestroyNotify = ctypes.CFUNCTYPE(None, ctypes.c_void_p)

_lib.g_main_loop_new.restype = ctypes.c_void_p
_lib.g_main_loop_new.argtypes = [ctypes.c_void_p, ctypes.c_int]
_lib.g_main_loop_run.argtypes = [ctypes.c_void_p]
_lib.g_main_loop_quit.argtypes = [ctypes.c_void_p]
_lib.g_main_loop_unref.argtypes = [ctypes.c_void_p]
_lib.g_timeout_add_full.restype = ctypes.c_uint
_lib.g_timeout_add_full.argtypes = [ctypes.c_int, ctypes.c_uint, _SourceFunc, ctypes.c_void_p, _DestroyNotify]
_lib.g_idle_add_full.restype = ctypes.c_uint
_lib.g_idle_add_full.argtypes = [ctypes.c_int, _SourceFunc, ctypes.c_void_p, _DestroyNotify]
_lib.g_unix_signal_add_full.restype = ctypes.c_uint
_lib.g_unix_signal_add_full.argtypes = [ctypes.c_int, ctypes.c_int, _SourceFunc, ctypes.c_void_p, _DestroyNotify]
_lib.g_io_channel_unix_new.restype = ctypes.c_void_p
_lib.g_io_channel_unix_new.argtypes = [ctypes.c_int]
_lib.g_io_channel_unref.argtypes = [ctypes.c_void_p]
_lib.g_io_add_watch_full.restype = ctypes.c_uint
_lib.g_io_add_watch_full.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int, _IOFunc, ctypes.c_void_p,
                                     _DestroyNotify]
_lib.g_source_remove.restype = ctypes.c_int
_lib.g_source_remove.argtypes = [ctypes.c_uint]

# Three C callbacks for every source, made once; each source's data pointer is a key into _live, where its
# Python callable and arguments wait. GLib calls the destroy notify with that key when the source goes, whichever
# way (false result, source_remove), and the entry is dropped; nothing per source lives in C.
_live: dict[int, tuple] = {}
_next_key = [0]


def _call(key: Any, *first) -> int:
    entry = _live.get(key or 0)
    if entry is None:
        return 0
    func, args = entry
    try:
        return 1 if func(*first, *args) else 0
    except Exception:       # noqa: BLE001 - as PyGObject: say so; the source goes
        log.exception("GLib callback %s failed", getattr(func, "__name__", func))
        return 0


_on_source = _SourceFunc(lambda data: _call(data))
_on_destroy = _DestroyNotify(lambda data: _live.pop(data or 0, None) and None)


def _keep(func: Callable, args: tuple) -> int:
    _next_key[0] += 1
    _live[_next_key[0]] = (func, args)
    return _next_key[0]


def timeout_add(interval_ms: int, func: Callable, *args) -> int:
    key = _keep(func, args)
    return _lib.g_timeout_add_full(PRIORITY_DEFAULT, int(interval_ms), _on_source, key, _on_destroy)


def idle_add(func: Callable, *args) -> int:
    key = _keep(func, args)
    return _lib.g_idle_add_full(PRIORITY_DEFAULT_IDLE, _on_source, key, _on_destroy)


def unix_signal_add(priority: int, signum: int, func: Callable, *args) -> int:
    key = _keep(func, args)
    return _lib.g_unix_signal_add_full(priority, int(signum), _on_source, key, _on_destroy)


def io_add_watch(fd: int, priority: int, condition: int, func: Callable, *args) -> int:
    """`func(fd, condition, *args)` while `condition` holds on `fd` (a file descriptor number)."""
    key = _keep(lambda cond, *a: func(fd, cond, *a), args)
    channel = _lib.g_io_channel_unix_new(int(fd))
    try:
        return _lib.g_io_add_watch_full(channel, priority, condition, _on_io, key, _on_destroy)
    finally:
        _lib.g_io_channel_unref(channel)        # the watch holds its own reference


_on_io = _IOFunc(lambda _channel, condition, data: _call(data, condition))


def source_remove(source_id: int) -> bool:
    return bool(_lib.g_source_remove(source_id))


class MainLoop:
    """GLib's main loop on the default context (where dbus-python's DBusGMainLoop puts its connections)."""

    def __init__(self):
        self._loop = _lib.g_main_loop_new(None, 0)

    def run(self) -> None:
        _lib.g_main_loop_run(self._loop)

    def quit(self) -> None:
        _lib.g_main_loop_quit(self._loop)
