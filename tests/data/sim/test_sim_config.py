"""TaskConfig: the task: sections of configs/{lift,handoff,drawer}.yaml and strict validation."""

from __future__ import annotations

from pathlib import Path

import pytest
from teamvla_data.sim import TASKS, TaskConfig, default_task_config
from teamvla_schema.config import ConfigError, from_dict, load_config, parse_yaml, to_dict

CONFIGS = Path(__file__).resolve().parents[3] / "configs"


@pytest.mark.parametrize("task", TASKS)
def test_shipped_task_sections_validate_and_match_the_defaults(task):
    path = CONFIGS / f"{task}.yaml"
    section = parse_yaml(path.read_text())["task"]
    cfg = from_dict(TaskConfig, section, key="task", source=str(path))
    assert cfg.name == task
    assert cfg == default_task_config(task)
    loaded = load_config(path)
    assert from_dict(TaskConfig, loaded.data["task"], key="task", config=loaded) == cfg


def test_defaults_resolve_per_task_and_round_trip():
    for task in TASKS:
        cfg = TaskConfig(name=task).resolved()
        assert cfg.max_steps and len(cfg.instructions or []) >= 3
        assert from_dict(TaskConfig, to_dict(cfg), key="task") == cfg
    assert TaskConfig(name="lift", max_steps=33).resolved().max_steps == 33


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"name": "stack"}, "expected one of"),
        ({"max_step": 5}, "did you mean 'task.max_steps'"),
        ({"instructions": ["lift the block"]}, "{color}"),
        ({"instructions": ["lift the red {color} block"]}, "only through"),
        ({"instructions": []}, "at least one"),
        ({"expert": {"speed_min": 0.05, "speed_max": 0.01}}, "speed_min"),
        ({"world": {"num_joints": 2}}, ">= 3"),
        ({"world": {"image_size": "96"}}, "expected int"),
        ({"success": {"lift_height": -1}}, "> 0"),
    ],
)
def test_bad_sections_name_the_key(section, message):
    with pytest.raises(ConfigError) as err:
        from_dict(TaskConfig, section, key="task")
    assert message in str(err.value)
