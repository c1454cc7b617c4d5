"""Writing a checkpoint so that nothing is lost: atomic file, then pointer; cleanup of failed writes.

Both the checkpoint and the ``latest`` pointer are written atomically
(:mod:`teamvla_schema.atomic`), the pointer only after the checkpoint is
complete. A failed write (disk full, quota, file-size limit) raises
:class:`~teamvla_train.engine.checkpointing.CheckpointWriteError` and leaves
the previous checkpoint and pointer as they were, with no temporary file.
"""

from __future__ import annotations

import errno
import logging
import os
import re
from collections.abc import Callable
from pathlib import Path

from teamvla_schema.atomic import TMP_SUFFIX

from teamvla_train.engine.checkpointing import (
    LATEST,
    CheckpointWriteError,
    is_checkpoint_name,
    publish_checkpoint,
)

log = logging.getLogger(__name__)


_TEMPORARY = re.compile(r"\.(?P<target>.+)\.(?P<pid>\d+)-[0-9a-f]+" + re.escape(TMP_SUFFIX))


def _process_alive(pid: int) -> bool:
    if os.name != "posix":
        return True  # cannot tell: keep the file
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # e.g. another user's process
    return True


def remove_stale_temporaries(ckpt_dir: Path) -> list[str]:
    """Delete unfinished checkpoint and pointer writes of processes that no longer run.

    A run killed while writing leaves its hidden temporary file
    (``.<name>.<pid>-<random>.tmp``, see :mod:`teamvla_schema.atomic`); as big as
    a checkpoint, such files would pile up over repeated kills. Files of live
    processes and every other file are left alone. Returns the deleted names.
    """
    if not ckpt_dir.is_dir():
        return []
    removed = []
    for p in sorted(ckpt_dir.iterdir()):
        m = _TEMPORARY.fullmatch(p.name)
        if m is None or not (is_checkpoint_name(m["target"]) or m["target"] == LATEST):
            continue
        pid = int(m["pid"])
        if pid == os.getpid() or _process_alive(pid):
            continue
        try:
            p.unlink()
        except OSError as exc:
            log.warning("could not delete the unfinished write %s: %s", p, exc)
            continue
        removed.append(p.name)
    return removed


def remove_failed_write(ckpt_dir: Path, name: str) -> list[str]:
    """Delete the temporary files this process left for ``name``; return those that remain.

    A write that fails on a full disk can leave its temporary file behind (closing
    the file flushes buffered bytes, which fails again); it would hold on to the
    very space that ran out.
    """
    remaining = []
    prefix = f".{name}.{os.getpid()}-"
    for p in ckpt_dir.glob(f".{name}.*{TMP_SUFFIX}") if ckpt_dir.is_dir() else []:
        if not p.name.startswith(prefix) or _TEMPORARY.fullmatch(p.name) is None:
            continue
        try:
            p.unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.warning("could not delete the unfinished write %s: %s", p, exc)
            remaining.append(p.name)
    return remaining


def os_error(exc: OSError) -> str:
    """``No space left on device [ENOSPC]``."""
    code = errno.errorcode.get(exc.errno or 0)
    return f"{exc.strerror or exc}" + (f" [{code}]" if code else "")


def write_checkpoint(
    ckpt_dir: Path,
    name: str,
    write: Callable[[Path], Path],
    *,
    step: int,
    epoch: int,
    keep_last: int,
    previous: Path | None,
) -> Path:
    """Write checkpoint ``name`` with ``write(path)``, then point ``latest`` at it (keep-last-K).

    ``previous`` is the checkpoint this run resumed from or wrote last: the
    pointer's history (what keep-last-K may delete) continues only from it.
    """
    parent = (
        previous.name
        if previous is not None and previous.parent.resolve() == ckpt_dir.resolve()
        else None
    )
    unchanged = (
        f"the previous checkpoint {previous.name} and the '{LATEST}' pointer are unchanged"
        if previous is not None
        else f"the '{LATEST}' pointer is unchanged"
    )
    advice = f"free disk space in {ckpt_dir} (or lower trainer.keep_last) and continue with --resume auto"
    try:
        path = write(ckpt_dir / name)
    except OSError as exc:
        left = remove_failed_write(ckpt_dir, name)
        partial = f"the partial file {left[0]} remains" if left else "no partial file was left"
        raise CheckpointWriteError(
            f"could not write the checkpoint of step {step} ({os_error(exc)}); {partial}, "
            f"{unchanged}: {advice}",
            path=ckpt_dir / name,
        ) from exc
    try:
        publish_checkpoint(
            ckpt_dir, name, step=step, epoch=epoch, keep_last=keep_last, parent=parent
        )
    except OSError as exc:
        remove_failed_write(ckpt_dir, LATEST)
        raise CheckpointWriteError(
            f"wrote {name} but could not update the '{LATEST}' pointer ({os_error(exc)}); "
            f"{unchanged}: {advice}",
            path=ckpt_dir / LATEST,
        ) from exc
    return path
