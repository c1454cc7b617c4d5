"""Closed-loop rollouts of a policy in the simulated world, batched over several envs.

One :func:`run_rollouts` call plays a list of :class:`EpisodeSpec` (task, seed,
optional instruction) in groups of ``batch_envs`` environments that advance in
lock step, so one ``policy.predict_chunk`` call serves the whole group:

* Each env keeps its last ``To = policy.obs_history + 1`` observations. At the
  start the first observation is repeated and marked in ``obs_is_pad``, exactly
  as the dataloader pads windows that reach before the episode start.
* Action chunks: the policy predicts ``Ha`` future joint targets; the first
  ``replan_every`` of them are executed, then the policy re-plans from the new
  observations. With ``temporal_ensemble > 0`` it re-plans every step instead and
  executes the weighted average of every chunk that covers the current step
  (weights ``exp(-temporal_ensemble * age)``, age 0 = the newest chunk; ACT's
  temporal ensembling, with the opposite sign convention: a positive value
  favours fresh predictions).
* Gripper probabilities are thresholded at 0.5.
* An episode stops at success, when the env says it is done, or at the step
  limit (the task's, or ``max_steps`` when given, whichever is smaller).

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

GRIP_THRESHOLD = 0.5
ARMS = ("a", "b")


class ChunkPolicy(Protocol):
    """What a rollout needs from a policy (:class:`teamvla_train.policy.Policy` has it)."""

    obs_history: int
    action_horizon: int

    def predict_chunk(self, obs: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """Batched observation window -> un-normalised action chunk (see module doc)."""
        ...


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


class _History:
    """The last ``To`` observations of one env, padded at the episode start."""

    def __init__(self, first: Mapping[str, Any], to: int) -> None:
        self.frames = [first] * to
        self.pad = [True] * (to - 1) + [False]

    def push(self, obs: Mapping[str, Any]) -> None:
        self.frames = [*self.frames[1:], obs]
        self.pad = [*self.pad[1:], False]


def _stack_obs(histories: Sequence[_History], instructions: Sequence[str]) -> dict[str, Any]:
    """Batch the windows of several envs as ``predict_chunk`` expects them."""
    out: dict[str, Any] = {}
    for key, dtype in (
        ("rgb_a", np.uint8),
        ("rgb_b", np.uint8),
        ("q_a", np.float32),
        ("q_b", np.float32),
    ):
        out[key] = np.stack(
            [np.stack([np.asarray(f[key], dtype=dtype) for f in h.frames]) for h in histories]
        )  # (B, To, ...)
    out["obs_is_pad"] = np.array([h.pad for h in histories], dtype=bool)  # (B, To)
    out["instruction"] = list(instructions)
    return out


def _action_at(chunk: Mapping[str, np.ndarray], row: int, k: int) -> dict[str, Any]:
    """The env action for step ``k`` of one env's chunk, gripper thresholded."""
    action: dict[str, Any] = {}
    for arm in ARMS:
        action[f"action_{arm}"] = np.asarray(chunk[f"action_{arm}"][row, k], dtype=np.float32)
        action[f"grip_{arm}"] = np.float32(
            1.0 if chunk[f"grip_{arm}"][row, k] > GRIP_THRESHOLD else 0.0
        )
    return action


class _Ensembler:
    """Temporal ensembling for one env: weighted mean of every chunk covering a step."""

    def __init__(self, decay: float) -> None:
        self.decay = decay
        self.chunks: list[tuple[int, dict[str, np.ndarray]]] = []  # (start step, chunk of this env)

    def add(self, start: int, chunk: dict[str, np.ndarray]) -> None:
        self.chunks.append((start, chunk))

    def action(self, t: int) -> dict[str, Any]:
        live = [(start, c) for start, c in self.chunks if 0 <= t - start < len(c["grip_a"])]
        self.chunks = live  # chunks that no longer cover t never will again
        ages = np.array([len(live) - 1 - i for i in range(len(live))], dtype=np.float64)
        w = np.exp(-self.decay * ages)
        w /= w.sum()
        action: dict[str, Any] = {}
        for arm in ARMS:
            joints = sum(wi * c[f"action_{arm}"][t - s] for wi, (s, c) in zip(w, live, strict=True))
            grip = sum(wi * c[f"grip_{arm}"][t - s] for wi, (s, c) in zip(w, live, strict=True))
            action[f"action_{arm}"] = np.asarray(joints, dtype=np.float32)
            action[f"grip_{arm}"] = np.float32(1.0 if grip > GRIP_THRESHOLD else 0.0)
        return action


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
    to = int(policy.obs_history) + 1
    ha = int(policy.action_horizon)
    k_exec = 1 if temporal_ensemble > 0 else max(1, min(int(replan_every), ha))
    n = len(specs)
    histories: list[_History] = []
    instructions: list[str] = []
    limits: list[int] = []
    frames: list[list[np.ndarray] | None] = []
    for env, spec in zip(envs, specs, strict=False):
        obs = env.reset(spec.task, spec.seed, instruction=spec.instruction)
        histories.append(_History(obs, to))
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
    chunk: dict[str, np.ndarray] | None = None
    rows: dict[int, int] = {}  # env index -> row of the current chunk
    ensemblers = (
        [_Ensembler(temporal_ensemble) for _ in range(n)] if temporal_ensemble > 0 else None
    )
    t = 0
    while not all(done):
        active = [i for i in range(n) if not done[i]]
        if t % k_exec == 0:
            batch = _stack_obs([histories[i] for i in active], [instructions[i] for i in active])
            chunk = {key: np.asarray(v) for key, v in policy.predict_chunk(batch).items()}
            rows = {i: r for r, i in enumerate(active)}
            if ensemblers is not None:
                for i, r in rows.items():
                    ensemblers[i].add(t, {key: v[r] for key, v in chunk.items()})
        assert chunk is not None
        for i in active:
            if ensemblers is not None:
                action = ensemblers[i].action(t)
            else:
                action = _action_at(chunk, rows[i], t % k_exec)
            obs, ok, env_done, _info = envs[i].step(action)
            steps[i] += 1
            histories[i].push(obs)
            if record:
                frames[i].append(_side_by_side(obs))  # type: ignore[union-attr]
            success[i] = bool(ok)
            done[i] = bool(ok) or bool(env_done) or steps[i] >= limits[i]
        if on_step is not None:
            on_step(len(active))
        t += 1
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
