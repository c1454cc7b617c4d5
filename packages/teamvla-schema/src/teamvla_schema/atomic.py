"""Atomic file writing (temporary file in the target directory, fsync, rename) and safe opening.

A reader (or a crash) can only ever observe the old file or the complete new
one, never a truncated file. Temporary files start with ``.`` and end with
``.tmp`` so that scanners ignore any left behind by a killed process.

:func:`open_regular` and :func:`read_regular` open files for reading that must
be regular files: a FIFO (which would block forever), a device such as
``/dev/zero`` (endless) or a directory is refused with a clear error before
it is opened.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import IO, BinaryIO

TMP_SUFFIX = ".tmp"

_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)
_READ_FLAGS = (
    os.O_RDONLY
    | getattr(os, "O_NONBLOCK", 0)  # a FIFO swapped in after the check must not block the open
    | getattr(os, "O_CLOEXEC", 0)
    | getattr(os, "O_BINARY", 0)
)


class NotRegularFileError(OSError):
    """A path that had to be a regular file is a FIFO, device or socket (directories raise
    ``IsADirectoryError``)."""


def file_kind(mode: int) -> str:
    """What a ``st_mode`` describes, for messages: ``"a FIFO"``, ``"a directory"``, ..."""
    if stat.S_ISREG(mode):
        return "a regular file"
    for test, kind in _KINDS:
        if test(mode):
            return kind
    return "not a regular file"


def _require_regular(st: os.stat_result, path: str | os.PathLike[str]) -> None:
    if stat.S_ISDIR(st.st_mode):
        raise IsADirectoryError(errno.EISDIR, "not a regular file (a directory)", os.fspath(path))
    if not stat.S_ISREG(st.st_mode):
        raise NotRegularFileError(
            errno.EINVAL, f"not a regular file ({file_kind(st.st_mode)})", os.fspath(path)
        )


def open_regular(path: str | os.PathLike[str]) -> tuple[BinaryIO, os.stat_result]:
    """Open an existing regular file for binary reading; return it and its ``fstat``.

    Symbolic links are followed (a loop raises ``OSError`` ELOOP). A directory
    raises ``IsADirectoryError``, anything else that is not a regular file
    :class:`NotRegularFileError`, without being opened
    (opening a FIFO blocks until a writer appears; opening a device can have
    side effects); the type is checked again on the open descriptor.
    """
    _require_regular(os.stat(path), path)
    fd = os.open(path, _READ_FLAGS)
    try:
        st = os.fstat(fd)
        _require_regular(st, path)
        return os.fdopen(fd, "rb"), st
    except BaseException:
        os.close(fd)
        raise


def read_regular(path: str | os.PathLike[str], max_bytes: int | None = None) -> bytes:
    """The bytes of a regular file (see :func:`open_regular`), refusing files over ``max_bytes``."""
    fh, st = open_regular(path)
    with fh:
        if max_bytes is not None and st.st_size > max_bytes:
            raise OSError(
                errno.EFBIG,
                f"file is {st.st_size} bytes, more than the {max_bytes} bytes expected at most",
                os.fspath(path),
            )
        data = fh.read() if max_bytes is None else fh.read(max_bytes + 1)
    if max_bytes is not None and len(data) > max_bytes:  # it grew after the fstat
        raise OSError(errno.EFBIG, f"file is larger than {max_bytes} bytes", os.fspath(path))
    return data


def is_temporary(path: str | os.PathLike[str]) -> bool:
    """True for the names :func:`atomic_write` uses for its unfinished files."""
    name = os.path.basename(os.fspath(path))
    return name.startswith(".") and name.endswith(TMP_SUFFIX)


def fsync_path(path: str | os.PathLike[str]) -> None:
    """fsync a file or directory by path; a path that cannot be opened raises ``OSError``,
    a file system that refuses to fsync it (some do for directories) is not an error."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_dir(directory: Path) -> None:
    # Make the rename itself durable; not every platform lets a directory be opened.
    with contextlib.suppress(OSError):
        fsync_path(directory)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str], *, overwrite: bool = True) -> Iterator[IO[bytes]]:
    """Open a binary file that appears at ``path`` only once the block completes.

    With ``overwrite=False`` an existing ``path`` raises :class:`FileExistsError`,
    checked atomically at publication time (a hard link cannot replace a file),
    so two writers racing for one name cannot clobber each other.
    """
    target = Path(path)
    if target.is_dir():  # checked first so the error names the target, not the temporary file
        raise IsADirectoryError(errno.EISDIR, "is a directory, expected a file path", str(target))
    target.parent.mkdir(parents=True, exist_ok=True)
    if not overwrite and target.exists():
        raise FileExistsError(f"{target} already exists (pass overwrite=True to replace it)")
    tmp = target.parent / f".{target.name}.{os.getpid()}-{secrets.token_hex(4)}{TMP_SUFFIX}"
    fh = open(tmp, "xb")  # noqa: SIM115 - closed explicitly below so fsync precedes close
    try:
        yield fh
        fh.flush()
        os.fsync(fh.fileno())
        fh.close()
        if overwrite:
            os.replace(tmp, target)
        else:
            try:
                os.link(tmp, target)
            except FileExistsError:
                raise FileExistsError(
                    f"{target} already exists (pass overwrite=True to replace it)"
                ) from None
            except OSError:
                # File systems without hard links: fall back to a checked rename.
                if target.exists():
                    raise FileExistsError(f"{target} already exists") from None
                os.replace(tmp, target)
            else:
                os.unlink(tmp)
        _fsync_dir(target.parent)
    finally:
        if not fh.closed:
            # Closing flushes buffered bytes, which fails again on a full disk: the temporary
            # file must be deleted all the same (the original error is already propagating).
            with contextlib.suppress(OSError):
                fh.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def atomic_write_bytes(
    path: str | os.PathLike[str], data: bytes, *, overwrite: bool = True
) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_write(path, overwrite=overwrite) as fh:
        fh.write(data)


def atomic_write_text(path: str | os.PathLike[str], text: str, *, overwrite: bool = True) -> None:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"), overwrite=overwrite)
