"""Map files on disk: reading a regular file through its descriptor, and atomic
writes inside one directory addressed by an open directory descriptor.

:func:`read_regular` refuses anything but a regular file (a FIFO would block the
reader for good, a device such as ``/dev/zero`` never ends) and reads exactly the
size ``fstat`` reports, so reading never allocates more than the file holds.
:func:`write_atomically` writes a temporary file ``.<name>.<pid>.<random>.tmp`` in
the directory (created with ``O_EXCL | O_NOFOLLOW``: it never opens an existing
file or follows a planted link), fsyncs it, renames it over ``name`` (``rename``
replaces a link or file of that name and never follows it) and fsyncs the
directory. A crash at any moment leaves either the previous file or the new one
under ``name``, never a partial file; a killed writer's temporary file is removed
by the next save of the same name.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import stat
from collections.abc import Iterable
from pathlib import Path
from typing import IO

log = logging.getLogger(__name__)

Chunk = bytes | memoryview
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_O_DIRECTORY = getattr(os, "O_DIRECTORY", 0)


class NotRegularFileError(OSError):
    """The descriptor names a directory, FIFO, device or socket, not a regular file."""


def read_regular(fd: int, max_bytes: int | None = None) -> bytearray:
    """The whole content of the regular file open as ``fd``, read from its start.

    Raises :class:`NotRegularFileError` for anything but a regular file,
    ``OverflowError`` when it is larger than ``max_bytes`` (checked before
    reading) and OSError for read errors. A file that shrinks while it is read gives
    the bytes that were there (the map format then says "truncated")."""
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        raise NotRegularFileError(f"not a regular file (mode {stat.filemode(st.st_mode)})")
    if max_bytes is not None and st.st_size > max_bytes:
        raise OverflowError(f"{st.st_size} bytes, more than {max_bytes}")
    buf = bytearray(st.st_size)
    view = memoryview(buf)
    got = 0
    while got < st.st_size:
        n = os.preadv(fd, [view[got:]], got) if hasattr(os, "preadv") else _pread(fd, view, got)
        if n == 0:
            break
        got += n
    view.release()
    del buf[got:]
    return buf


def _pread(fd: int, view: memoryview, offset: int) -> int:
    data = os.pread(fd, len(view) - offset, offset)
    view[offset: offset + len(data)] = data
    return len(data)


def open_directory(path: Path) -> int:
    """A read-only descriptor of the directory ``path`` (OSError if it is none)."""
    return os.open(path, os.O_RDONLY | _O_DIRECTORY | _O_CLOEXEC)


def write_file(path: Path, chunks: list[Chunk], mode: int = 0o666) -> None:
    """:func:`write_atomically` to ``path`` (its parent directory must exist)."""
    fd = open_directory(path.parent)
    try:
        write_atomically(fd, path.name, chunks, mode)
    finally:
        os.close(fd)


def _write_chunks(fh: IO[bytes], chunks: Iterable[Chunk]) -> None:
    for c in chunks:
        fh.write(c)


def write_atomically(dir_fd: int, name: str, chunks: list[Chunk], mode: int = 0o666) -> None:
    """Write ``chunks`` to a temporary file in the directory ``dir_fd``, fsync it,
    rename it over ``name`` and fsync the directory. ``mode`` (minus the umask) is the
    new file's permissions. On any error the temporary file is removed and the error
    (OSError, or whatever interrupted the write) propagates."""
    _remove_stale_temps(dir_fd, name)
    tmp = f".{name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_NOFOLLOW | _O_CLOEXEC, mode,
                 dir_fd=dir_fd)
    try:
        with os.fdopen(fd, "wb") as fh:
            _write_chunks(fh, chunks)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=dir_fd)
        raise
    with contextlib.suppress(OSError):  # make the rename durable (best effort)
        os.fsync(dir_fd)


def _remove_stale_temps(dir_fd: int, name: str) -> None:
    """Delete temporary files of ``name`` left by writing processes that were killed."""
    prefix = f".{name}."
    try:
        entries = os.listdir(dir_fd)
    except OSError:
        return
    for entry in entries:
        if not (entry.startswith(prefix) and entry.endswith(".tmp")):
            continue
        parts = entry[len(prefix):].split(".")
        if len(parts) != 3 or not parts[0].isdigit() or int(parts[0]) == os.getpid():
            continue
        try:
            os.kill(int(parts[0]), 0)
        except ProcessLookupError:
            with contextlib.suppress(OSError):
                os.unlink(entry, dir_fd=dir_fd)
                log.info("removed %s left by an interrupted save", entry)
        except (OSError, OverflowError):
            continue
