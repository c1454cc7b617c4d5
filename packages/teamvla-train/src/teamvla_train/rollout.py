"""Closed-loop rollouts of a policy in the simulated world, batched over several envs.

One :func:`run_rollouts` call plays a list of :class:`EpisodeSpec` (task, seed,
optional instruction) in groups of ``batch_envs`` environments that advance in
lock step. The closed-loop logic (observation history with start padding,
action chunks and their queue, temporal ensembling, gripper threshold) is
:class:`teamvla_train.control.ChunkController`, the same code that serves
``Policy.select_action``; environments that re-plan together share one
``policy.predict_chunk`` call. An episode stops at success, when the env says it
is done, or at the step limit (the task's, or ``max_steps`` when given,
whichever is smaller).

Only the documented env interface is used: ``env.reset(task, seed,
instruction=None) -> obs`` and ``env.step(action) -> (obs, success, done,
info)``, where ``obs`` holds ``rgb_a``, ``rgb_b``, ``q_a``, ``q_b`` and
``instruction`` and ``action`` holds ``action_a``, ``action_b`` (float32[N]) and
``grip_a``, ``grip_b`` (float).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from teamvla_train.control import ChunkController, ChunkPolicy

__all__ = ["ChunkPolicy", "EpisodeResult", "EpisodeSpec", "run_rollouts"]


class Env(Protocol):
    """The simulated-world interface a rollout drives (``teamvla_data.sim.BimanualEnv``)."""

    def reset(self, task: str, seed: int, instruction: str | None = None) -> dict[str, Any]: ...

    def step(
        self, action: Mapping[str, Any]
    ) -> tuple[dict[str, Any], bool, bool, dict[str, Any]]: ...


@dataclass(frozen=True)
class EpisodeSpec:
    """One evaluation episode: the scene comes from (task, seed); ``instruction``
    overrides the env's own instruction (e.g. the language-swapped one)."""

    task: str
    seed: int
    instruction: str | None = None


@dataclass
class EpisodeResult:
    """Outcome of one closed-loop episode."""

    spec: EpisodeSpec
    instruction: str  # the instruction the policy was given
    success: bool
    steps: int  # env steps executed
    step_limit: int
    frames: list[np.ndarray] | None = field(default=None, repr=False)  # (H, 2W, 3) uint8 per step

    @property
    def task(self) -> str:
        """Task slug of the episode."""
        return self.spec.task


def step_limit_of(env: Any, task: str) -> int | None:
    """The task's step limit as the env exposes it, or None if it does not."""
    candidates = [getattr(env, "max_steps", None), getattr(env, "step_limit", None)]
    task_cfgs = getattr(env, "task_cfgs", None)  # BimanualEnv: resolved TaskConfig per task
    if isinstance(task_cfgs, Mapping) and task in task_cfgs:
        candidates.insert(0, getattr(task_cfgs[task], "max_steps", None))
    for value in candidates:
        if callable(value):
            value = value(task)
        if isinstance(value, int | np.integer) and value > 0:
            return int(value)
    return None


def _side_by_side(obs: Mapping[str, Any]) -> np.ndarray:
    return np.concatenate(
        [np.asarray(obs["rgb_a"]), np.asarray(obs["rgb_b"])], axis=1
    )  # (H, 2W, 3)


def _run_group(
    policy: ChunkPolicy,
    envs: Sequence[Env],
    specs: Sequence[EpisodeSpec],
    *,
    replan_every: int,
    temporal_ensemble: float,
    max_steps: int | None,
    record: bool,
    on_step: Callable[[int], None] | None,
) -> list[EpisodeResult]:
    n = len(specs)
    control = ChunkController(
        policy, n, replan_every=replan_every, temporal_ensemble=temporal_ensemble
    )
    last_obs: list[Mapping[str, Any]] = []
    instructions: list[str] = []
    limits: list[int] = []
    frames: list[list[np.ndarray] | None] = []
    for env, spec in zip(envs, specs, strict=False):
        obs = env.reset(spec.task, spec.seed, instruction=spec.instruction)
        last_obs.append(obs)
        instructions.append(str(obs.get("instruction", spec.instruction or "")))
        limit = step_limit_of(env, spec.task)
        candidates = [x for x in (limit, max_steps) if x is not None]
        if not candidates:
            raise ValueError(
                f"env for task {spec.task!r} exposes no step limit and no max_steps was given"
            )
        limits.append(min(candidates))
        frames.append([_side_by_side(obs)] if record else None)
    success = [False] * n
    done = [False] * n
    steps = [0] * n
    while not all(done):
        active = [i for i in range(n) if not done[i]]
        actions = control.act([last_obs[i] for i in active], active)
        for i, action in zip(active, actions, strict=True):
            obs, ok, env_done, _info = envs[i].step(action)
            last_obs[i] = obs
            steps[i] += 1
            if record:
                frames[i].append(_side_by_side(obs))  # type: ignore[union-attr]
            success[i] = bool(ok)
            done[i] = bool(ok) or bool(env_done) or steps[i] >= limits[i]
        if on_step is not None:
            on_step(len(active))
    return [
        EpisodeResult(
            spec=specs[i],
            instruction=instructions[i],
            success=success[i],
            steps=steps[i],
            step_limit=limits[i],
            frames=frames[i],
        )
        for i in range(n)
    ]


def run_rollouts(
    policy: ChunkPolicy,
    make_env: Callable[[], Env],
    specs: Iterable[EpisodeSpec],
    *,
    batch_envs: int = 10,
    replan_every: int = 4,
    temporal_ensemble: float = 0.0,
    max_steps: int | None = None,
    record: bool | Callable[[EpisodeSpec], bool] = False,
    on_step: Callable[[int], None] | None = None,
) -> list[EpisodeResult]:
    """Play every episode of ``specs`` closed loop; results come back in the same order.

    ``make_env`` builds one environment (called at most ``batch_envs`` times;
    envs are reused between groups). ``record`` keeps the camera frames of every
    episode (or of those it returns True for) in :attr:`EpisodeResult.frames`.
    ``on_step(n_active)`` is called after each lock-step advance (progress bars).
    """
    if batch_envs < 1:
        raise ValueError(f"batch_envs must be >= 1, received {batch_envs}")
    if temporal_ensemble < 0 or not math.isfinite(temporal_ensemble):
        raise ValueError(
            f"temporal_ensemble must be a finite value >= 0, received {temporal_ensemble}"
        )
    if replan_every < 1:
        raise ValueError(f"replan_every must be >= 1, received {replan_every}")
    specs = list(specs)
    envs: list[Env] = []
    results: list[EpisodeResult] = []
    for start in range(0, len(specs), batch_envs):
        group = specs[start : start + batch_envs]
        while len(envs) < len(group):
            envs.append(make_env())
        if callable(record):
            # Record per group only if any member wants it; drop the others' frames after.
            wanted = [bool(record(s)) for s in group]
            out = _run_group(
                policy,
                envs,
                group,
                replan_every=replan_every,
                temporal_ensemble=temporal_ensemble,
                max_steps=max_steps,
                record=any(wanted),
                on_step=on_step,
            )
            for res, keep in zip(out, wanted, strict=True):
                if not keep:
                    res.frames = None
        else:
            out = _run_group(
                policy,
                envs,
                group,
                replan_every=replan_every,
                temporal_ensemble=temporal_ensemble,
                max_steps=max_steps,
                record=bool(record),
                on_step=on_step,
            )
        results.extend(out)
    return results
