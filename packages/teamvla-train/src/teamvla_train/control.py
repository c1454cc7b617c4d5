"""Closed-loop control from a chunk policy: observation history, action queue, temporal ensembling.

A chunk policy maps a window of ``To`` observations to ``Ha`` future actions.
An environment gives one observation per step and takes one action per step.
:class:`ChunkController` bridges the two for ``B`` environments at once, each
with its own state, so environments may start and end episodes at different
times (vector environments with autoreset):

* **History.** Each environment keeps its last ``To = policy.obs_history + 1``
  observations. After a reset the first observation is repeated and marked in
  ``obs_is_pad``, exactly as the dataloader pads windows that reach before the
  episode start.
* **Action queue.** A fresh chunk's first ``replan_every`` actions are queued
  and executed one per step; when an environment's queue runs dry it re-plans.
  Environments that re-plan at the same step share one ``predict_chunk`` call.
* **Temporal ensembling** (``temporal_ensemble > 0``): re-plan every step and
  execute the weighted mean of every chunk that covers the current step,
  weights ``exp(-temporal_ensemble * age)`` with age 0 the newest chunk (ACT's
  ensembling, with the opposite sign convention: a positive value favours fresh
  predictions).
* Gripper probabilities are thresholded at 0.5, so actions are exactly what
  the environment accepts: ``action_a``/``action_b`` float32 ``(N,)``,
  ``grip_a``/``grip_b`` float32 0 or 1.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import numpy as np

GRIP_THRESHOLD = 0.5
ARMS = ("a", "b")
OBS_KEYS = (("rgb_a", np.uint8), ("rgb_b", np.uint8), ("q_a", np.float32), ("q_b", np.float32))


class ChunkPolicy(Protocol):
    """What control needs from a policy (:class:`teamvla_train.policy.Policy` has it)."""

    @property
    def obs_history(self) -> int:
        """Previous frames the policy wants with the current one (``To - 1``)."""
        ...

    @property
    def action_horizon(self) -> int:
        """Steps per predicted chunk (``Ha``)."""
        ...

    def predict_chunk(self, obs: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """Batched observation window -> un-normalised action chunk."""
        ...


def threshold_action(joints: Mapping[str, Any], grips: Mapping[str, Any]) -> dict[str, Any]:
    """An environment action from joint targets and closed-gripper probabilities."""
    action: dict[str, Any] = {}
    for arm in ARMS:
        action[f"action_{arm}"] = np.asarray(joints[arm], dtype=np.float32)
        action[f"grip_{arm}"] = np.float32(1.0 if float(grips[arm]) > GRIP_THRESHOLD else 0.0)
    return action


class _EnvState:
    """History, queue and ensembling chunks of one environment's episode."""

    def __init__(self, first: Mapping[str, Any], to: int) -> None:
        self.frames = [first] * to
        self.pad = [True] * (to - 1) + [False]
        self.instruction = str(first.get("instruction", ""))
        self.t = 0  # steps executed in this episode
        self.queue: list[dict[str, Any]] = []
        self.chunks: list[tuple[int, dict[str, np.ndarray]]] = []  # (start step, chunk)

    def push(self, obs: Mapping[str, Any]) -> None:
        self.frames = [*self.frames[1:], obs]
        self.pad = [*self.pad[1:], False]

    def ensembled(self, decay: float) -> dict[str, Any]:
        t = self.t
        live = [(s, c) for s, c in self.chunks if 0 <= t - s < len(c["grip_a"])]
        self.chunks = live  # chunks that no longer cover t never will again
        ages = np.array([len(live) - 1 - i for i in range(len(live))], dtype=np.float64)
        w = np.exp(-decay * ages)
        w /= w.sum()
        joints, grips = {}, {}
        for arm in ARMS:
            joints[arm] = sum(wi * c[f"action_{arm}"][t - s] for wi, (s, c) in zip(w, live, strict=True))  # fmt: skip
            grips[arm] = sum(wi * c[f"grip_{arm}"][t - s] for wi, (s, c) in zip(w, live, strict=True))  # fmt: skip
        return threshold_action(joints, grips)


def stack_windows(states: Sequence[_EnvState]) -> dict[str, Any]:
    """The observation windows of several environments, batched as ``predict_chunk`` expects."""
    out: dict[str, Any] = {}
    for key, dtype in OBS_KEYS:
        out[key] = np.stack(
            [np.stack([np.asarray(f[key], dtype=dtype) for f in s.frames]) for s in states]
        )  # (B, To, ...)
    out["obs_is_pad"] = np.array([s.pad for s in states], dtype=bool)  # (B, To)
    out["instruction"] = [s.instruction for s in states]
    return out


class ChunkController:
    """Per-environment closed-loop state for ``num_envs`` environments driven by one chunk policy."""

    def __init__(
        self,
        policy: ChunkPolicy,
        num_envs: int = 1,
        *,
        replan_every: int = 4,
        temporal_ensemble: float = 0.0,
    ) -> None:
        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, received {num_envs}")
        if replan_every < 1:
            raise ValueError(f"replan_every must be >= 1, received {replan_every}")
        if temporal_ensemble < 0 or not math.isfinite(temporal_ensemble):
            raise ValueError(
                f"temporal_ensemble must be a finite value >= 0, received {temporal_ensemble}"
            )
        self.policy = policy
        self.num_envs = num_envs
        self.to = int(policy.obs_history) + 1
        ha = int(policy.action_horizon)
        self.temporal_ensemble = float(temporal_ensemble)
        self.k_exec = 1 if temporal_ensemble > 0 else max(1, min(int(replan_every), ha))
        self._states: list[_EnvState | None] = [None] * num_envs

    def reset(self, envs: Sequence[int] | None = None) -> None:
        """Forget the episodes of ``envs`` (all by default): their next observation starts anew."""
        for i in range(self.num_envs) if envs is None else envs:
            self._states[i] = None

    def act(
        self, observations: Sequence[Mapping[str, Any]], envs: Sequence[int] | None = None
    ) -> list[dict[str, Any]]:
        """One action for each environment in ``envs`` (default all), from its newest observation.

        ``observations[j]`` is what environment ``envs[j]`` returned from its
        last ``reset`` or ``step``. Call once per environment step.
        """
        envs = list(range(self.num_envs)) if envs is None else list(envs)
        if len(observations) != len(envs):
            raise ValueError(f"{len(observations)} observations for {len(envs)} environments")
        states: list[_EnvState] = []
        for i, obs in zip(envs, observations, strict=True):
            st = self._states[i]
            if st is None:
                st = self._states[i] = _EnvState(obs, self.to)
            else:
                st.push(obs)
            states.append(st)
        replan = [
            st for st in states if self.temporal_ensemble > 0 or not st.queue
        ]  # environments whose queue ran dry (all, when ensembling)
        if replan:
            chunk = {k: np.asarray(v) for k, v in self.policy.predict_chunk(stack_windows(replan)).items()}  # fmt: skip
            for row, st in enumerate(replan):
                mine = {k: v[row] for k, v in chunk.items()}  # (Ha, ...) of this environment
                if self.temporal_ensemble > 0:
                    st.chunks.append((st.t, mine))
                else:
                    st.queue = [
                        threshold_action(
                            {arm: mine[f"action_{arm}"][k] for arm in ARMS},
                            {arm: mine[f"grip_{arm}"][k] for arm in ARMS},
                        )
                        for k in range(self.k_exec)
                    ]
        actions = []
        for st in states:
            action = st.ensembled(self.temporal_ensemble) if self.temporal_ensemble > 0 else st.queue.pop(0)  # fmt: skip
            st.t += 1
            actions.append(action)
        return actions
