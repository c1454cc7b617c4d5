"""Logging backends besides ``metrics.jsonl``: TensorBoard and Weights & Biases (offline).

``trainer.loggers`` names them; ``jsonl`` is always written (reports, plots and
resume read it), the others are optional extras of teamvla-train:

==============  =========================================  ==============================
logger          where                                      needs
==============  =========================================  ==============================
``jsonl``       ``<run>/metrics.jsonl``                    nothing (always on)
``tensorboard`` ``<run>/tensorboard/`` (event files)       ``teamvla-train[tensorboard]``
``wandb``       ``<run>/wandb/offline-run-*/`` (offline)   ``teamvla-train[wandb]``
==============  =========================================  ==============================

Every backend gets the same things: each number of each metrics record as a
scalar ``<split or event>/<key>`` at the record's step (``train/loss``,
``val/loss``, ``dagger_iteration/intervention_rate``; booleans, strings and
the step itself are not scalars), the resolved config (TensorBoard: the text
summary ``config``; W&B: the run config) and pictures: PNGs under
``pictures/<file stem>`` and GIFs under ``animations/<file stem>``
(TensorBoard: image summaries holding the file's own bytes, so a GIF stays
animated; W&B: ``wandb.Image`` / ``wandb.Video(format="gif")``).

A missing package is an :class:`ImportError` naming the extra when
:class:`RunLoggers` is built (at setup, before any training); the backends
themselves open on the first record, so a refused resume leaves nothing
behind. W&B runs strictly offline (``mode="offline"`` and quiet settings
passed to ``wandb.init``, which take precedence over ``WANDB_*`` variables: no
network, no login, no console capture); upload later with ``wandb sync
<run>/wandb/offline-run-*``. Each process is its own W&B run, grouped by the
run directory's name: job type ``train`` for a fresh run, ``resume`` for each
continuation, ``eval`` for the pictures of ``teamvla demo`` / ``teamvla eval``.
A resumed TensorBoard writer purges the events an earlier process logged
after the resume step (``purge_step``), as
:func:`~teamvla_train.engine.metrics.read_metrics` keeps the last record per step.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

log = logging.getLogger(__name__)

LOGGER_NAMES = ("jsonl", "tensorboard", "wandb")
TENSORBOARD_DIR = "tensorboard"
WANDB_PROJECT = "teamvla"
#: Pictures of a run (besides the training curves) logged when training ends, when present.
RUN_PICTURES = ("dagger/iterations.png",)
CURVES_FILE = "training_curves.png"

# The modules each backend imports (torch's writer needs the tensorboard package).
_MODULES = {"tensorboard": ("tensorboard", "torch.utils.tensorboard"), "wandb": ("wandb",)}


def require_packages(names: Sequence[str]) -> None:
    """Raise a one-line error for an unknown logger or one whose package is not installed."""
    for name in names:
        if name == "jsonl":
            continue
        if name not in _MODULES:
            raise ValueError(
                f"trainer.loggers: unknown logger {name!r} (expected {', '.join(LOGGER_NAMES)})"
            )
        for module in _MODULES[name]:
            try:
                importlib.import_module(module)
            except ImportError as exc:
                raise ImportError(
                    f"trainer.loggers: {name} needs the {name} package: "
                    f"install teamvla-train[{name}]"
                ) from exc


def configured_loggers(config: Mapping[str, Any]) -> list[str]:
    """The loggers a resolved config asks for (also from configs of older versions)."""
    trainer = config.get("trainer") or {}
    names = [str(n) for n in trainer.get("loggers") or ["jsonl"]]
    if trainer.get("tensorboard") is True:  # the deprecated switch
        names.append("tensorboard")
    return list(dict.fromkeys(n for n in names if n in LOGGER_NAMES))


def scalars_of(record: Mapping[str, Any]) -> dict[str, float]:
    """The numbers of a metrics record, named ``<split or event>/<key>`` (not the step itself)."""
    prefix = record.get("split") or record.get("event") or "metrics"
    return {
        f"{prefix}/{k}": float(v)
        for k, v in record.items()
        if k != "step" and isinstance(v, int | float) and not isinstance(v, bool)
    }


def picture_tag(path: str | Path) -> str:
    """``animations/<stem>`` for a GIF, ``pictures/<stem>`` for any other image."""
    p = Path(path)
    return f"{'animations' if p.suffix.lower() == '.gif' else 'pictures'}/{p.stem}"


class Backend(Protocol):
    """What each logger does (numbers, the config, pictures)."""

    def scalars(self, values: Mapping[str, float], step: int) -> None: ...
    def config(self, config: Mapping[str, Any], step: int) -> None: ...
    def picture(self, tag: str, path: Path, step: int) -> None: ...
    def close(self, *, failed: bool) -> None: ...


class TensorBoardBackend:
    """Event files in ``<run>/tensorboard`` through ``torch.utils.tensorboard.SummaryWriter``."""

    def __init__(self, run_dir: Path, *, purge_step: int | None = None) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer: Any = SummaryWriter(str(run_dir / TENSORBOARD_DIR), purge_step=purge_step)

    def scalars(self, values: Mapping[str, float], step: int) -> None:
        for tag, value in values.items():
            self.writer.add_scalar(tag, value, step)

    def config(self, config: Mapping[str, Any], step: int) -> None:
        from teamvla_schema.config import dump_yaml

        # Indented: Markdown shows it verbatim.
        text = "\n".join("    " + line for line in dump_yaml(dict(config)).splitlines())
        self.writer.add_text("config", text, step)

    def picture(self, tag: str, path: Path, step: int) -> None:
        from PIL import Image
        from tensorboard.compat.proto.summary_pb2 import Summary

        data = path.read_bytes()
        with Image.open(io.BytesIO(data)) as img:
            width, height = img.size
        image = Summary.Image(height=height, width=width, colorspace=3, encoded_image_string=data)
        summary = Summary(value=[Summary.Value(tag=tag, image=image)])
        self.writer.file_writer.add_summary(summary, step)

    def close(self, *, failed: bool) -> None:
        self.writer.close()


@contextlib.contextmanager
def _offline_environment(run_dir: Path) -> Iterator[None]:
    """``WANDB_*`` variables for wandb's process-wide setup and service, restored afterwards.

    The run's settings make the run offline; these also keep wandb's own process-wide
    telemetry (which follows the process's mode, not the run's) from calling home.
    """
    wanted = {
        "WANDB_MODE": "offline",
        "WANDB_SILENT": "true",
        "WANDB_DIR": str(run_dir),
        "WANDB_ERROR_REPORTING": "false",
    }
    saved = {k: os.environ.get(k) for k in wanted}
    os.environ.update(wanted)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class WandbBackend:
    """An offline W&B run in ``<run>/wandb/offline-run-*`` (``wandb sync`` uploads it later)."""

    def __init__(self, run_dir: Path, *, config: Mapping[str, Any], job: str, step: int) -> None:
        import wandb

        settings = wandb.Settings(
            mode="offline",
            silent=True,
            quiet=True,
            show_info=False,
            show_warnings=False,
            console="off",  # no stdout/stderr capture
            save_code=False,
            disable_code=True,
            disable_git=True,
            disable_job_creation=True,
            x_disable_stats=True,  # no system-metrics sampler
            x_disable_meta=True,
            x_disable_machine_info=True,
            x_save_requirements=False,
            init_timeout=60.0,
        )
        name = run_dir.resolve().name
        with _offline_environment(run_dir):
            self.run: Any = wandb.init(
                mode="offline",
                dir=str(run_dir),
                project=WANDB_PROJECT,
                group=name,
                job_type=job,
                name=name if job == "train" else f"{name}-{job}-{step}",
                config=dict(config),
                settings=settings,
                reinit="create_new",  # never finish or reuse a run the caller has open
            )
        self._wandb = wandb

    def scalars(self, values: Mapping[str, float], step: int) -> None:
        self.run.log(dict(values), step=step)

    def config(self, config: Mapping[str, Any], step: int) -> None:
        pass  # given to wandb.init

    def picture(self, tag: str, path: Path, step: int) -> None:
        wandb = self._wandb
        gif = path.suffix.lower() == ".gif"
        media = wandb.Video(str(path), format="gif") if gif else wandb.Image(str(path))
        self.run.log({tag: media}, step=step)

    def close(self, *, failed: bool) -> None:
        self.run.finish(exit_code=1 if failed else 0)


class RunLoggers:
    """The optional backends of one process writing one run directory.

    ``names`` are ``trainer.loggers`` (``jsonl`` is the caller's); packages are
    checked here, the backends open on first use. ``job`` is ``train``,
    ``resume`` (TensorBoard then purges the events after ``start_step``) or
    ``eval``. :meth:`close` is idempotent and must be reached on every path
    (W&B runs a service process until its run is finished).
    """

    def __init__(
        self,
        run_dir: str | Path,
        names: Sequence[str],
        *,
        config: Mapping[str, Any] | None = None,
        job: str = "train",
        start_step: int = 0,
    ) -> None:
        require_packages(names)
        self.run_dir = Path(run_dir)
        self.names = [n for n in dict.fromkeys(names) if n != "jsonl"]
        self.config = dict(config or {})
        self.job = job
        self.step = start_step
        self._backends: list[Backend] | None = None
        self.closed = False

    def _open(self) -> list[Backend]:
        if self.closed:
            raise RuntimeError("the run's loggers are closed")
        if self._backends is None:
            opened: list[Backend] = []
            try:
                for name in self.names:
                    if name == "tensorboard":
                        # A resumed writer hides what an earlier process logged after the resume step.
                        purge = self.step + 1 if self.job == "resume" else None
                        opened.append(TensorBoardBackend(self.run_dir, purge_step=purge))
                    else:
                        opened.append(
                            WandbBackend(
                                self.run_dir, config=self.config, job=self.job, step=self.step
                            )
                        )
                    opened[-1].config(self.config, self.step)
            except BaseException:
                for backend in opened:
                    backend.close(failed=True)
                raise
            self._backends = opened
        return self._backends

    def record(self, record: Mapping[str, Any]) -> None:
        """Log the numbers of one metrics record at its step."""
        step = record.get("step")
        if not self.names or not isinstance(step, int) or isinstance(step, bool):
            return
        values = scalars_of(record)
        backends = self._open()
        self.step = max(self.step, step)
        if values:
            for backend in backends:
                backend.scalars(values, step)

    def picture(self, path: str | Path, *, step: int | None = None, tag: str | None = None) -> None:
        """Log one PNG or GIF file (at ``step``, else the last step logged)."""
        if not self.names:
            return
        for backend in self._open():
            backend.picture(
                tag or picture_tag(path), Path(path), self.step if step is None else step
            )

    def close(self, *, failed: bool = False, metrics: Path | None = None) -> None:
        """Finish every backend; after a training run (``metrics``: its JSONL) log its pictures first."""
        if self.closed:
            return
        try:
            if self._backends is not None and metrics is not None and not failed:
                self._log_run_pictures(metrics)
        except Exception as exc:  # the run is done and saved: a picture must not fail it
            log.warning("the run's pictures were not logged: %s", exc)
        finally:
            self.closed = True
            for backend in self._backends or []:
                try:
                    backend.close(failed=failed)
                except Exception as exc:  # one backend failing must not keep the others open
                    log.warning("closing a %s logger failed: %s", type(backend).__name__, exc)
            self._backends = None

    def _log_run_pictures(self, metrics: Path) -> None:
        from teamvla_schema import SchemaError

        from teamvla_train.plots import plot_training_curves

        try:
            curves = plot_training_curves(
                metrics, self.run_dir / CURVES_FILE, title=self.run_dir.resolve().name
            )
        except SchemaError as exc:  # nothing to draw yet
            log.info("no training curves to log: %s", exc)
        else:
            self.picture(curves)
        for rel in RUN_PICTURES:
            if (self.run_dir / rel).is_file():
                self.picture(self.run_dir / rel)


def log_pictures(
    run_dir: str | Path,
    names: Sequence[str],
    pictures: Sequence[str | Path],
    *,
    step: int,
    config: Mapping[str, Any] | None = None,
    strict: bool = True,
) -> bool:
    """Log picture files (rollout GIFs and strips) to a run's loggers, as an ``eval`` job.

    Returns whether anything was logged. With ``strict=False`` a failure (a
    missing package: ``teamvla eval`` of a checkpoint trained elsewhere; a
    backend error) is a warning: the pictures are saved files already.
    """
    if not [n for n in names if n != "jsonl"] or not pictures:
        return False
    try:
        loggers = RunLoggers(run_dir, names, config=config, job="eval", start_step=step)
        failed = True
        try:
            for path in pictures:
                loggers.picture(path, step=step)
            failed = False
        finally:
            loggers.close(failed=failed)
    except Exception as exc:
        if strict:
            raise
        log.warning("pictures not logged to %s: %s", ", ".join(names), exc)
        return False
    return True
