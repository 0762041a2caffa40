"""Reading and writing the small JSON files kept in the state folder, safely.

`read_regular(path)` opens without following a symbolic link and without blocking (a FIFO at the path would
otherwise hang the start), refuses anything but a regular file (NotRegularFile) and reads at most `max_bytes`
(TooLarge). `write_atomic(path, text)` writes a temp file (no symlink followed, mode 0600), fsyncs it and renames
it over `path`, then fsyncs the folder.
"""
from __future__ import annotations

import os
import stat


class UnusableFile(Exception):
    """The file exists but cannot be used."""


class NotRegularFile(UnusableFile):
    """A FIFO, device, folder ...: never read, never moved."""


class TooLarge(UnusableFile):
    pass


def read_regular(path: str, max_bytes: int = 1_000_000) -> bytes:
    """The file's bytes; FileNotFoundError, OSError (ELOOP for a symbolic link), NotRegularFile or TooLarge."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise NotRegularFile("not a regular file")
        chunks, size = [], 0
        while size <= max_bytes:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > max_bytes:
            raise TooLarge(f"larger than {max_bytes} bytes")
        return b"".join(chunks)
    finally:
        os.close(fd)


def write_atomic(path: str, text: str) -> None:
    """Raises OSError."""
    folder = os.path.dirname(path) or "."
    os.makedirs(folder, exist_ok=True)
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    try:
        dir_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass
