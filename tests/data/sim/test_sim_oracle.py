"""The experts as oracles: they finish the task from states a weak policy visits.

A smaller sample of benchmarks/bench_expert_oracle.py (which runs 100 seeds per
cell): every task and perturbation, 8 evaluation seeds each.
"""

from __future__ import annotations

import numpy as np
import pytest
from teamvla_data.sim import TASKS, BimanualEnv, WorldConfig, make_expert
from teamvla_data.sim.layout import LAYOUT
from teamvla_data.sim.oracle import PERTURBATIONS, completion_table, perturbed_state

FAST = WorldConfig(render=False)


@pytest.mark.parametrize("task", TASKS)
def test_expert_completes_from_perturbed_states(task):
    cells = completion_table(BimanualEnv(FAST), [task], PERTURBATIONS, episodes=8)
    kinds = {c.kind for c in cells}
    assert kinds == set(PERTURBATIONS) - ({"half_open_drawer"} if task != "drawer" else set())
    for cell in cells:
        assert cell.trials >= 4, cell  # most perturbations leave the task undone
        assert cell.rate >= 7 / 8, cell
    total = sum(c.completed for c in cells) / sum(c.trials for c in cells)
    assert total >= 0.95


def test_a_block_dropped_in_front_of_the_cabinet_is_picked_up_again():
    # Regression: the drawer expert took a block lying on the table under the pulled-out
    # tray for one resting in the tray, and waited for ever.
    env = BimanualEnv(FAST)
    env.reset("drawer", 5, instruction="put the red block in the drawer")
    env.state.block_pos[0] = (LAYOUT.cabinet_x1 + 0.03, LAYOUT.block_half)
    expert = make_expert("drawer", np.random.default_rng(0))
    for _ in range(env.task_cfg.max_steps or 0):
        _, success, _, _ = env.step(expert.act(env))
        if success:
            break
    assert success


def test_perturbations_reach_states_off_the_experts_path():
    env = BimanualEnv(FAST)
    rng = np.random.default_rng(0)
    assert perturbed_state(env, "drawer", 2, "half_open_drawer", rng)
    assert 0.03 <= env.state.drawer <= 0.2 and env.state.handle_holder != 1
    assert not perturbed_state(env, "lift", 2, "half_open_drawer", rng)  # no drawer in lift
    assert perturbed_state(env, "lift", 2, "wrong_block", rng)
    assert env.state.holders[1 - env.state.target]  # holding the other block
    with pytest.raises(ValueError, match="unknown perturbation 'shove'"):
        perturbed_state(env, "lift", 2, "shove", rng)
