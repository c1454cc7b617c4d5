"""Are the scripted experts good oracles? Completion from states a weak policy visits.

DAgger-style algorithms and evaluation ask the expert what to do in states off
its own path. :func:`perturbed_state` drives a world into such a state with a
*perturbation* (a stand-in for a weak policy), then :func:`expert_completes`
lets a fresh expert (``make_expert(task, rng)``, its own random parameters)
try to finish the task from there, within twice the task's ``max_steps``
counted from the hand-over ("enough steps left"; finishing within
``max_steps`` is counted too). :func:`completion_table` tallies it
per task and perturbation; ``benchmarks/bench_expert_oracle.py`` prints it and
tests/data/sim/test_sim_oracle.py checks a smaller sample.

Perturbations (``PERTURBATIONS``; each draws its randomness from ``rng``):

* ``noisy_expert``: the expert with heavy noise (joint targets + N(0, 0.15 rad),
  each gripper command flipped with probability 0.15) for 5-39 steps;
* ``random_targets``: random joint targets anywhere within the limits (a new
  one every 4 steps) and random gripper commands for 3-24 steps;
* ``dropped_block``: the expert until the named block is held, 0-14 more steps,
  then both grippers open for 3 steps (the block falls wherever it is);
* ``half_open_drawer`` (drawer only): the expert until the drawer is 3-13 cm
  open, then arm B lets go of the handle for 3 steps;
* ``nudged_block``: 0-29 expert steps, then the named block, if free, is pushed
  3-8 cm sideways (off the cabinet, possibly) and settles for 3 steps;
* ``wrong_block``: the expert working on the *other* block until it holds it,
  then 0-24 more steps of that.

A perturbation that happens to complete the task is not counted.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from teamvla_data.sim.experts import Expert, make_expert
from teamvla_data.sim.record import expert_rng
from teamvla_data.sim.seeds import eval_seeds
from teamvla_data.sim.world import ARM_B, BimanualEnv, is_success

Action = dict[str, Any]


def _noisy(action: Action, rng: np.random.Generator) -> Action:
    out = dict(action)
    for key in ("action_a", "action_b"):
        out[key] = (action[key] + rng.normal(0.0, 0.15, action[key].shape)).astype(np.float32)
    for key in ("grip_a", "grip_b"):
        if rng.random() < 0.15:
            out[key] = np.float32(1.0 - float(action[key]))
    return out


def _run(env: BimanualEnv, steps: int, policy: Callable[[], Action]) -> bool:
    """Step ``policy`` for ``steps`` steps; True if the task got done on the way."""
    for _ in range(steps):
        _, success, _, _ = env.step(policy())
        if success:
            return True
    return False


def _until(env: BimanualEnv, expert: Expert, done: Callable[[], bool], limit: int = 200) -> bool:
    """Expert steps until ``done()``; True if the task got done on the way."""
    for _ in range(limit):
        if done():
            return False
        _, success, _, _ = env.step(expert.act(env))
        if success:
            return True
    return False


def perturbed_state(
    env: BimanualEnv, task: str, seed: int, kind: str, rng: np.random.Generator
) -> bool:
    """Reset ``env`` to ``(task, seed)`` and apply perturbation ``kind``.

    Returns False when the perturbation does not apply (``half_open_drawer``
    outside the drawer task) or completed the task itself; the state to finish
    from is then ``env.state``.
    """
    if kind not in PERTURBATIONS:
        raise ValueError(
            f"unknown perturbation {kind!r}; perturbations are {', '.join(PERTURBATIONS)}"
        )
    env.reset(task, seed)
    expert = make_expert(task, expert_rng(seed), env.task_cfg)
    state, n = env.state, env.num_joints
    if kind == "noisy_expert":
        return not _run(env, int(rng.integers(5, 40)), lambda: _noisy(expert.act(env), rng))
    if kind == "random_targets":
        goal: dict[str, Any] = {}

        def wander() -> Action:
            if state.t % 4 == 0 or not goal:
                goal.update(
                    action_a=rng.uniform(-2.7, 2.7, n).astype(np.float32),
                    action_b=rng.uniform(-2.7, 2.7, n).astype(np.float32),
                )
            grips = rng.random(2) < 0.5
            return {**goal, "grip_a": np.float32(grips[0]), "grip_b": np.float32(grips[1])}

        return not _run(env, int(rng.integers(3, 25)), wander)
    if kind == "dropped_block":
        if _until(env, expert, lambda: bool(state.holders[state.target])):
            return False
        if _run(env, int(rng.integers(0, 15)), lambda: expert.act(env)):
            return False
        opened = {"grip_a": np.float32(0.0), "grip_b": np.float32(0.0)}
        return not _run(env, 3, lambda: {**expert.act(env), **opened})
    if kind == "half_open_drawer":
        if not state.has_drawer:
            return False
        opening = float(rng.uniform(0.03, 0.13))
        if _until(env, expert, lambda: state.drawer >= opening and state.handle_holder == ARM_B):
            return False
        return not _run(env, 3, lambda: {**expert.act(env), "grip_b": np.float32(0.0)})
    if kind == "nudged_block":
        if _run(env, int(rng.integers(0, 30)), lambda: expert.act(env)):
            return False
        if not state.holders[state.target]:
            state.block_pos[state.target, 0] += rng.choice([-1.0, 1.0]) * rng.uniform(0.03, 0.08)
        return not _run(env, 3, env.hold_action)
    # wrong_block: the expert of the same scene with the other block as its target.
    true_target = state.target
    state.target = 1 - true_target
    try:
        _until(env, expert, lambda: bool(state.holders[state.target]))
        _run(env, int(rng.integers(0, 25)), lambda: expert.act(env))
    finally:
        state.target = true_target
    return not is_success(state, env.task_cfg, env.layout)


def expert_completes(
    env: BimanualEnv, task: str, rng: np.random.Generator, budget: int | None = None
) -> tuple[bool, int]:
    """A fresh expert acts from ``env.state`` for up to ``budget`` steps (default: the task's
    ``max_steps``); returns (success, steps taken)."""
    expert = make_expert(task, rng, env.task_cfg)
    budget = int(env.task_cfg.max_steps or 0) if budget is None else budget
    for step in range(1, budget + 1):
        _, success, _, _ = env.step(expert.act(env))
        if success:
            return True, step
    return False, budget


PERTURBATIONS = (
    "noisy_expert",
    "random_targets",
    "dropped_block",
    "half_open_drawer",
    "nudged_block",
    "wrong_block",
)


@dataclass
class Completion:
    """Tally of one (task, perturbation) cell."""

    task: str
    kind: str
    max_steps: int = 0  # the task's step limit
    trials: int = 0  # perturbed states the expert had to finish from
    completed: int = 0  # ... and finished within 2 x max_steps
    within_limit: int = 0  # ... and finished within max_steps
    skipped: int = 0  # the perturbation did not apply or completed the task itself
    steps: int = 0  # expert steps over the completed trials
    failed_seeds: list[int] = field(default_factory=list)  # not finished within 2 x max_steps

    @property
    def rate(self) -> float:
        """Completion rate within 2 x max_steps (nan without trials)."""
        return self.completed / self.trials if self.trials else float("nan")

    @property
    def rate_within_limit(self) -> float:
        """Completion rate within the task's max_steps (nan without trials)."""
        return self.within_limit / self.trials if self.trials else float("nan")


def completion_table(
    env: BimanualEnv,
    tasks: Sequence[str],
    kinds: Sequence[str] = PERTURBATIONS,
    episodes: int = 100,
    start: int = 0,
) -> list[Completion]:
    """Completion per (task, perturbation) over ``episodes`` evaluation seeds each.

    The expert gets ``2 * max_steps`` steps ("enough steps left": a state far
    off the path can need more than an episode's worth); finishing within
    ``max_steps`` is counted too.
    """
    out = []
    for task in tasks:
        for k, kind in enumerate(kinds):
            cell = Completion(task, kind)
            for i, seed in enumerate(eval_seeds(task, episodes, start)):
                rng = np.random.default_rng([start + i, k, 0x0AC1E])
                if not perturbed_state(env, task, seed, kind, rng):
                    cell.skipped += 1
                    continue
                limit = cell.max_steps = int(env.task_cfg.max_steps or 0)
                rng = np.random.default_rng([seed, 0x0AC1E])
                ok, steps = expert_completes(env, task, rng, 2 * limit)
                cell.trials += 1
                if ok:
                    cell.completed += 1
                    cell.within_limit += steps <= limit
                    cell.steps += steps
                else:
                    cell.failed_seeds.append(seed)
            if cell.trials or kind != "half_open_drawer":
                out.append(cell)
    return out
