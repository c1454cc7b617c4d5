"""Atomic file writing: temporary file in the target directory, fsync, rename.

A reader (or a crash) can only ever observe the old file or the complete new
one, never a truncated file. Temporary files start with ``.`` and end with
``.tmp`` so that scanners ignore any left behind by a killed process.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import IO

TMP_SUFFIX = ".tmp"


def is_temporary(path: str | os.PathLike[str]) -> bool:
    """True for the names :func:`atomic_write` uses for its unfinished files."""
    name = os.path.basename(os.fspath(path))
    return name.startswith(".") and name.endswith(TMP_SUFFIX)


def _fsync_dir(directory: Path) -> None:
    # Make the rename itself durable; not every platform lets a directory be opened.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


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
