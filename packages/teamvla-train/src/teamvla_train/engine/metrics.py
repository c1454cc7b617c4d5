"""Run metrics: a JSONL file (one object per line), the other loggers, and a reader.

The JSONL file is an append-only log: each record is written with one
``write`` call on a file opened in append mode. A resumed run appends after
the records of the run it continues (records of steps after its checkpoint
are written again); :func:`read_metrics` keeps the last record per
``(split, step)`` and skips a line torn by a killed process. TensorBoard and
Weights & Biases (``trainer.loggers``) get the same records through
:mod:`teamvla_train.engine.loggers`.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from teamvla_schema import SchemaError

from teamvla_train.engine.loggers import RunLoggers, require_packages

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    return value


class MetricsLogger:
    """Append metric records to ``<run_dir>/metrics.jsonl`` and hand them to the other loggers.

    ``loggers`` are ``trainer.loggers`` (``jsonl`` is always written); a missing
    package raises :class:`ImportError` here, before any training. ``config``
    is logged by the other backends; ``resumed_at`` is the step a resumed run
    continues from (None: a fresh run). Only an ``enabled`` logger (rank 0)
    writes anything.
    """

    def __init__(
        self,
        run_dir: Path,
        *,
        enabled: bool = True,
        loggers: Sequence[str] = ("jsonl",),
        config: Mapping[str, Any] | None = None,
        resumed_at: int | None = None,
    ) -> None:
        self.path = Path(run_dir) / METRICS_FILE
        self.enabled = enabled
        require_packages(loggers)  # on every rank, so that all of them stop alike
        self.others = RunLoggers(
            run_dir,
            loggers if enabled else (),
            config=config,
            job="train" if resumed_at is None else "resume",
            start_step=resumed_at or 0,
        )
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # A run killed mid-write may have left a torn last line: start on a fresh line.
        if self.path.exists() and self.path.stat().st_size:
            with open(self.path, "rb") as fh:
                fh.seek(-1, os.SEEK_END)
                if fh.read(1) != b"\n":
                    self._append("\n")

    def _append(self, text: str) -> None:
        data = text.encode("utf-8")
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                written = os.write(fd, data)
            finally:
                os.close(fd)
        except OSError as exc:
            raise SchemaError(
                f"cannot append to the metrics log ({exc.strerror or exc}): free disk space and "
                "continue the run with --resume auto",
                path=self.path,
            ) from exc
        if written != len(data):  # only a full disk or a file size limit cuts a write short
            raise SchemaError(
                f"the metrics log took only {written} of {len(data)} bytes (disk full?): free disk "
                "space and continue the run with --resume auto",
                path=self.path,
            )

    def write(self, record: Mapping[str, Any]) -> None:
        """Append one record (plain numbers and strings); its numbers go to the other loggers."""
        if not self.enabled:
            return
        clean = {k: _clean(v) for k, v in record.items()}
        self._append(json.dumps(clean, allow_nan=False) + "\n")
        self.others.record(record)

    def log_picture(self, path: str | os.PathLike[str], *, step: int | None = None) -> None:
        """Log a PNG or GIF file to the other loggers (JSONL holds numbers only)."""
        if self.enabled:
            self.others.picture(Path(path), step=step)

    def close(self, *, failed: bool = False) -> None:
        """Finish the other loggers (idempotent); after a run that ended well, log its curves first."""
        self.others.close(failed=failed, metrics=self.path if self.enabled else None)


def read_metrics(path: str | os.PathLike[str], split: str | None = "train") -> list[dict[str, Any]]:
    """Records of ``split`` (None: all records with a step), last one per (split, step), by step."""
    latest: dict[tuple[str, int], dict[str, Any]] = {}
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            line = line.strip()
            if not line:
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue  # torn by a killed writer
            if "step" not in rec or "split" not in rec:
                continue
            if split is None or rec["split"] == split:
                latest[(rec["split"], rec["step"])] = rec
    return [latest[k] for k in sorted(latest, key=lambda k: (k[1], k[0]))]


def read_events(path: str | os.PathLike[str], event: str) -> list[dict[str, Any]]:
    """Records whose ``event`` is ``event`` (e.g. ``dagger_iteration``), last one per step, by step."""
    latest: dict[int, dict[str, Any]] = {}
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue  # blank, or torn by a killed writer
            if isinstance(rec, dict) and rec.get("event") == event:
                latest[int(rec.get("step", -1))] = rec
    return [latest[k] for k in sorted(latest)]
