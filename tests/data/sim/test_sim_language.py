"""Instructions, target parsing and colour swapping; recording and evaluation seeds."""

from __future__ import annotations

import pytest
from teamvla_data.sim import (
    TASKS,
    eval_seeds,
    is_eval_seed,
    list_templates,
    parse_target,
    swap_instruction,
)
from teamvla_data.sim.language import make_instruction
from teamvla_data.sim.seeds import EVAL_SEED_START, episode_seed


@pytest.mark.parametrize("task", TASKS)
def test_every_task_has_several_paraphrases_naming_the_block(task):
    templates = list_templates(task)
    assert len(templates) >= 3
    assert len(set(templates)) == len(templates)
    for template in templates:
        for color in ("red", "blue"):
            assert parse_target(make_instruction(template, color)) == color


def test_swap_instruction():
    assert swap_instruction("lift the red block") == "lift the blue block"
    assert swap_instruction("Blue cube: hand it over") == "Red cube: hand it over"
    assert (
        swap_instruction(swap_instruction("put the RED block in the drawer"))
        == "put the RED block in the drawer"
    )
    assert parse_target(swap_instruction("pick up the blue block")) == "red"


@pytest.mark.parametrize(
    "bad", ["lift the block", "lift the red and the blue block", "lift the green block", "redo it"]
)
def test_instructions_must_name_exactly_one_colour(bad):
    with pytest.raises(ValueError, match="exactly one block colour"):
        parse_target(bad)
    with pytest.raises(ValueError):
        swap_instruction(bad)


def test_unknown_task_or_colour():
    with pytest.raises(ValueError, match="unknown task"):
        list_templates("stack")
    with pytest.raises(ValueError, match="unknown block colour"):
        make_instruction("lift the {color} block", "green")


def test_recording_seeds_are_deterministic_distinct_and_below_eval_range():
    seeds = {episode_seed(0, t, i) for t in TASKS for i in range(200)}
    assert len(seeds) == 600
    assert all(0 <= s < EVAL_SEED_START and not is_eval_seed(s) for s in seeds)
    assert episode_seed(0, "lift", 5) == episode_seed(0, "lift", 5)
    assert episode_seed(0, "lift", 5) != episode_seed(1, "lift", 5)


def test_eval_seeds_are_disjoint_from_recording_and_across_tasks():
    per_task = {t: eval_seeds(t, 500) for t in TASKS}
    flat = [s for seeds in per_task.values() for s in seeds]
    assert len(set(flat)) == len(flat)
    assert all(is_eval_seed(s) for s in flat)
    assert eval_seeds("lift", 3, start=2) == per_task["lift"][2:5]
    with pytest.raises(ValueError):
        eval_seeds("lift", -1)
    with pytest.raises(ValueError):
        episode_seed(0, "fly", 0)
