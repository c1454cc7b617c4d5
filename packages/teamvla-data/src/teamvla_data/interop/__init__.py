"""Dataset converters: TeamVLA episodes <-> LeRobot v3 datasets and robomimic HDF5 files.

``teamvla convert SRC DST --from ... --to ...`` on the command line, or::

    from teamvla_data.interop import convert
    result = convert("data/episodes", "exports/lerobot", dst_format="lerobot", fps=10)
    print(result.summary())

The field map is in :mod:`teamvla_data.interop.mapping` and docs/interop.md.
LeRobot needs ``teamvla-data[lerobot]`` (pyarrow, PyAV, Pillow), robomimic
``teamvla-data[robomimic]`` (h5py); importing this package needs neither.
"""

from __future__ import annotations

from teamvla_data.interop.api import ConvertResult, convert, detect_format

__all__ = ["ConvertResult", "convert", "detect_format"]
