"""The ``run:`` config section: settings every TeamVLA command shares.

Registered as ``run`` in the ``teamvla.config_sections`` entry points and
validated with :func:`teamvla_schema.config.from_dict`. Defaults live in
configs/common.yaml as well, with a comment per field.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from teamvla_schema.config import field

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]

# "cpu", "cuda" (the current CUDA device) or "cuda:N" (GPU number N).
DEVICE_PATTERN = r"cpu|cuda(?::[0-9]+)?"


@dataclass
class RunConfig:
    """Reproducibility, logging, compute device and where outputs go."""

    # --- reproducibility ------------------------------------------------------------
    seed: int = field(
        default=0,
        ge=0,
        doc="Seed of every random generator (Python, numpy, torch); an integer >= 0.",
    )

    # --- logging ----------------------------------------------------------------------
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = field(  # the values of LogLevel
        default="INFO", doc="Least severe log messages shown: DEBUG, INFO, WARNING or ERROR."
    )

    # --- compute ----------------------------------------------------------------------
    device: str = field(
        default="cpu",
        pattern=DEVICE_PATTERN,
        expected="a device 'cpu', 'cuda' or 'cuda:N' (N = GPU index, e.g. 'cuda:0')",
        doc="Where tensors live: 'cpu', 'cuda' (the current GPU) or 'cuda:N' (GPU number N).",
    )

    # --- outputs ----------------------------------------------------------------------
    output_dir: str = field(
        default="runs",
        pattern=r"(?s).*\S.*",
        expected="a directory path (not empty)",
        doc="Directory (relative to the working directory, or absolute) under which each run writes its folder.",
    )


__all__ = ["DEVICE_PATTERN", "LogLevel", "RunConfig"]
