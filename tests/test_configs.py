"""Every shipped config under configs/ loads, validates against the installed section classes and round-trips.

Cross-package on purpose: the ``dataset``/``task`` sections are validated by
teamvla-data and the ``model``/``optim``/... sections by teamvla-train through
the ``teamvla.config_sections`` entry points. A section whose class cannot be
imported is an error here, never a skip.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from teamvla_schema.checkpoint import load_checkpoint, save_checkpoint
from teamvla_schema.cli import main
from teamvla_schema.config import (
    SECTION_PACKAGES,
    config_from_checkpoint,
    from_dict,
    load_config,
    parse_yaml,
    resolved_data,
    save_resolved_config,
    section_entry_points,
    validate_config,
)

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))
EXPECTED = {"common.yaml", "train_bc.yaml", "lift.yaml", "handoff.yaml", "drawer.yaml"}


def ids(paths: list[Path]) -> list[str]:
    return [p.name for p in paths]


def test_expected_configs_are_shipped():
    missing = EXPECTED - {p.name for p in CONFIGS}
    assert not missing, f"configs/ lacks {sorted(missing)}"


def test_every_standard_section_has_an_entry_point():
    assert set(SECTION_PACKAGES) <= set(section_entry_points())


@pytest.mark.parametrize("path", CONFIGS, ids=ids(CONFIGS))
def test_config_loads_and_validates(path):
    loaded = load_config(path)
    assert loaded.data, f"{path.name} is empty"
    typed = validate_config(
        loaded
    )  # raises (never skips) when a section's class cannot be imported
    assert set(typed) == set(loaded.data)
    for name, obj in typed.items():
        assert type(obj).__name__.endswith("Config"), (name, type(obj))


@pytest.mark.parametrize("path", CONFIGS, ids=ids(CONFIGS))
def test_config_round_trips_through_checkpoint_and_run_dir(path, tmp_path):
    loaded = load_config(path)
    typed = validate_config(loaded)
    full = resolved_data(loaded, typed)
    ckpt = save_checkpoint(
        tmp_path / "ckpt.safetensors", model={"w": np.zeros(3, np.float32)}, config=full
    )
    back = load_checkpoint(ckpt)["config"]
    assert back == full
    classes = {name: type(obj) for name, obj in typed.items()}
    assert {name: from_dict(cls, back[name], key=name) for name, cls in classes.items()} == typed
    assert validate_config(config_from_checkpoint(ckpt)) == typed
    saved = save_resolved_config(tmp_path / "run" / "config.yaml", full)
    assert validate_config(load_config(saved)) == typed


@pytest.mark.parametrize("path", CONFIGS, ids=ids(CONFIGS))
def test_config_show(path, capsys):
    assert main(["config", "show", "--sources", str(path)]) == 0
    out = capsys.readouterr().out
    loaded = load_config(path)
    assert parse_yaml(out) == resolved_data(loaded, validate_config(loaded))


# A key with its value on the same line (section headers, whose keys are commented, do not count).
_KEY_LINE = re.compile(r"^(\s*)([A-Za-z_][A-Za-z0-9_]*):\s+[^#\s]")


@pytest.mark.parametrize("path", CONFIGS, ids=ids(CONFIGS))
def test_every_field_carries_a_comment(path):
    """Each value has a comment on the line above (or at the end of its line) saying what it does."""
    lines = path.read_text().splitlines()
    bare = []
    for i, line in enumerate(lines):
        m = _KEY_LINE.match(line)
        if not m or m.group(2) == "extends" or " #" in line:
            continue
        above = next((lines[j].strip() for j in range(i - 1, -1, -1) if lines[j].strip()), "")
        if not above.startswith("#"):
            bare.append(f"{path.name}:{i + 1}: {line.strip()}")
    assert not bare, "keys without a comment:\n" + "\n".join(bare)


def test_common_yaml_defaults():
    typed = validate_config(load_config(ROOT / "configs" / "common.yaml"))
    run = typed["run"]
    assert (run.seed, run.log_level, run.device, run.output_dir) == (0, "INFO", "cpu", "runs")
    assert typed["dataset"].roots == ["data/episodes"]


def test_validation_imports_torch_only_for_train_sections():
    """run/dataset/task validate without torch; the train sections' module is torch-free too."""
    code = (
        "import json, sys\n"
        "from teamvla_schema.config import load_config, validate_config\n"
        "out = {}\n"
        "for path in json.loads(sys.argv[1]):\n"
        "    validate_config(load_config(path))\n"
        "    out[path] = sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.'))\n"
        "print(json.dumps(out))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run(
        [sys.executable, "-c", code, json.dumps([str(p) for p in CONFIGS])],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    imported = {Path(k).name: v for k, v in json.loads(proc.stdout).items()}
    assert all(not mods for mods in imported.values()), imported
