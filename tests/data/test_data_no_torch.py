"""Without torch: the dataset works, make_dataloader raises an ImportError naming the extra."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from data_testlib import write_many


def test_import_error_names_the_extra_without_torch(tmp_path: Path) -> None:
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "import teamvla_data\n"
        "from teamvla_data import MultiTaskDataset\n"
        f"ds = MultiTaskDataset({str(tmp_path / 'eps')!r})\n"
        "assert len(ds) > 0 and ds.__getitems__([0])['rgb_a'].dtype.name == 'uint8'\n"
        "ds.compute_stats()\n"
        "try:\n"
        f"    teamvla_data.make_dataloader({{'roots': [{str(tmp_path / 'eps')!r}]}})\n"
        "except ImportError as exc:\n"
        "    print('IMPORTERROR', exc)\n"
    )
    write_many(tmp_path / "eps", [("lift", "e0", 1, 3)])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert "IMPORTERROR" in proc.stdout and "teamvla-data[torch]" in proc.stdout


def test_importing_the_package_and_its_cli_does_not_import_torch(tmp_path: Path) -> None:
    write_many(tmp_path / "eps", [("lift", "e0", 1, 3)])
    code = (
        "import sys\n"
        "import teamvla_data, teamvla_data.cli, teamvla_data.transforms\n"
        "from teamvla_data import ImagesToFloat, MultiTaskDataset\n"
        f"ds = MultiTaskDataset({str(tmp_path / 'eps')!r})\n"
        "ds.normalizer(ds.compute_stats())(ImagesToFloat()(ds.__getitems__([0, 1])))\n"
        "print('torch loaded:', 'torch' in sys.modules)\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert "torch loaded: False" in proc.stdout
