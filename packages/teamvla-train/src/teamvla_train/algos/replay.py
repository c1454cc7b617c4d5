"""A bounded replay buffer of transitions, and RLPD's demonstration/online batch mixing.

:class:`ReplayBuffer` is a numpy ring of ``capacity`` transitions ``(obs,
action, reward, next_obs, done)``: float32 observations (``obs_mode="state"``
vectors), float32 actions in ``[-1, 1]``, float32 rewards, bool ``done`` (the
episode *terminated*: no bootstrapping; a time-limit truncation is not done).
When full, the oldest transition is overwritten. ``state_dict()`` holds the
filled rows as numpy arrays (a teamvla checkpoint stores them as tensors), so a
resumed run samples from exactly the buffer the interrupted one had.

:func:`sample_mixed` draws ``round(n * demo_ratio)`` transitions from a
demonstration buffer and the rest from the online one (Ball et al., 2023:
symmetric sampling is ``demo_ratio = 0.5``; it mixes pixel buffers,
:class:`teamvla_train.algos.pixel_replay.PixelReplayBuffer`, the same way).
:class:`NStep` turns steps into n-step transitions for either kind of
observation (a state vector, or a dict of pixel fields). :func:`record_demos`
records the scripted experts' transitions in the state-observation env for the
demo buffer (demonstrations from recorded datasets, which hold images and
joints but no object poses, are the pixel path: :mod:`teamvla_train.algos.demo_replay`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from teamvla_train.algos.ring import RingArrays

#: Batch keys of a transition (``add_batch`` arguments, sampled batches, update inputs).
OBS, ACTION, REWARD, NEXT_OBS, DONE, NSTEPS = (
    "obs",
    "action",
    "reward",
    "next_obs",
    "done",
    "nsteps",
)
FIELDS = (OBS, ACTION, REWARD, NEXT_OBS, DONE, NSTEPS)


class ReplayBuffer(RingArrays):
    """A ring of at most ``capacity`` transitions (see the module docstring)."""

    def __init__(self, *, capacity: int, obs_dim: int, action_dim: int) -> None:
        super().__init__(capacity, {
            OBS: ((obs_dim,), np.float32), ACTION: ((action_dim,), np.float32),
            REWARD: ((), np.float32), NEXT_OBS: ((obs_dim,), np.float32), DONE: ((), bool),
            NSTEPS: ((), np.float32),  # k of a k-step transition: gamma**k
        })  # fmt: skip
        self.arrays[NSTEPS][:] = 1.0
        # The fields as attributes too, (C, ...) each: the same arrays, written in place.
        self.obs, self.action, self.reward = (
            self.arrays[OBS],
            self.arrays[ACTION],
            self.arrays[REWARD],
        )
        self.next_obs, self.done, self.nsteps = (
            self.arrays[NEXT_OBS],
            self.arrays[DONE],
            self.arrays[NSTEPS],
        )

    def add_batch(
        self,
        *,
        obs: np.ndarray,
        action: np.ndarray,
        reward: np.ndarray,
        next_obs: np.ndarray,
        done: np.ndarray,
        nsteps: np.ndarray | None = None,
    ) -> None:
        """Append ``B`` transitions: ``obs (B, O)``, ``action (B, D)``, ``reward (B,)``, ``next_obs (B, O)``, ``done (B,)``.

        ``nsteps (B,)`` (default 1): the steps ``k`` between ``obs`` and ``next_obs``
        of an n-step transition, whose ``reward`` is already the discounted sum.
        """
        n = len(reward)
        self.write({
            OBS: obs, ACTION: action, REWARD: reward, NEXT_OBS: next_obs, DONE: done,
            NSTEPS: np.ones(n, np.float32) if nsteps is None else nsteps,
        })  # fmt: skip

    def sample(self, n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """``n`` transitions drawn uniformly with replacement (each field with a leading ``n`` axis)."""
        return self.draw(n, rng)

    def load_state_dict(
        self, state: Mapping[str, Any], *, defaults: Mapping[str, float] | None = None
    ) -> None:
        """Restore :meth:`state_dict`; a checkpoint from before n-step returns has ``k = 1``."""
        super().load_state_dict(state, defaults={NSTEPS: 1.0, **(defaults or {})})


def demo_rows(*, online: Any, demo: Any | None, n: int, demo_ratio: float) -> int:
    """How many of a mixed batch's ``n`` rows :func:`sample_mixed` draws from the demonstrations."""
    if len(online) == 0:
        return n
    return round(n * demo_ratio) if demo is not None and len(demo) else 0


def sample_mixed(
    *,
    online: Any,
    demo: Any | None,
    n: int,
    demo_ratio: float,
    rng: np.random.Generator,
) -> dict[str, np.ndarray]:
    """A batch of ``n``: ``round(n * demo_ratio)`` demonstration rows first, then online rows.

    ``online`` and ``demo`` are buffers of one kind (:class:`ReplayBuffer`, or both
    :class:`~teamvla_train.algos.pixel_replay.PixelReplayBuffer`). With no (or an empty) demonstration buffer every row is online; with an
    empty online buffer every row is a demonstration.
    """
    n_demo = demo_rows(online=online, demo=demo, n=n, demo_ratio=demo_ratio)
    parts = []
    if n_demo:
        assert demo is not None
        parts.append(demo.sample(n_demo, rng))
    if n - n_demo:
        parts.append(online.sample(n - n_demo, rng))
    return {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}


class NStep:
    """Per-world n-step returns: 1-step transitions in, ``n``-step transitions out.

    A transition ``(s_t, a_t)`` leaves once ``n`` rewards have followed it (or
    its episode ended) as ``(s_t, a_t, sum_{i<k} gamma^i r_{t+i}, s_{t+k}, done, k)``;
    ``done`` is true only if the episode *terminated* within those ``k`` steps
    (then nothing is bootstrapped), a truncation still bootstraps from the
    final observation with ``gamma^k``. ``n = 1`` passes transitions through.
    Observations are arrays ``(B, O)`` or dicts of batched fields ``(B, ...)``
    (pixel observations); string fields come out as object arrays.
    Pending transitions are not checkpointed: episodes in flight restart on resume.
    """

    def __init__(self, *, n: int, gamma: float, num_envs: int) -> None:
        if n < 1:
            raise ValueError(f"n-step returns need n >= 1, received {n}")
        self.n, self.gamma = n, gamma
        self.pending: list[list[tuple[Any, np.ndarray, float]]] = [[] for _ in range(num_envs)]

    def reset(self) -> None:
        """Forget every pending transition (the episodes in flight were restarted)."""
        self.pending = [[] for _ in self.pending]

    def _emit(self, rows: dict[str, list[Any]], i: int, next_obs: Any, done: bool) -> None:
        pend = self.pending[i]
        ret = sum(self.gamma**j * r for j, (_, _, r) in enumerate(pend))
        obs, action, _ = pend.pop(0)
        for key, value in zip(
            FIELDS, (obs, action, ret, next_obs, done, len(pend) + 1), strict=True
        ):
            rows[key].append(value)

    def push(
        self, *, obs: Any, action: np.ndarray, reward: np.ndarray, next_obs: Any,
        terminated: np.ndarray, truncated: np.ndarray,
    ) -> dict[str, Any]:  # fmt: skip
        """One step of every world (``(B, ...)`` each; ``next_obs`` the real final observation
        where an episode ended) -> the transitions completed by it, as ``add_batch`` arguments."""
        rows: dict[str, list[Any]] = {k: [] for k in FIELDS}
        for i, pend in enumerate(self.pending):
            pend.append((_row(obs, i), np.asarray(action[i]), float(reward[i])))
            if terminated[i] or truncated[i]:
                while pend:
                    self._emit(rows, i, _row(next_obs, i), bool(terminated[i]))
            elif len(pend) == self.n:
                self._emit(rows, i, _row(next_obs, i), False)
        out: dict[str, Any] = {
            REWARD: np.asarray(rows[REWARD], np.float32).reshape(-1),  # (K,)
            DONE: np.asarray(rows[DONE], bool).reshape(-1),  # (K,)
            NSTEPS: np.asarray(rows[NSTEPS], np.float32).reshape(-1),  # (K,)
            ACTION: _stack(rows[ACTION], action),
        }
        out[OBS], out[NEXT_OBS] = _stack(rows[OBS], obs), _stack(rows[NEXT_OBS], obs)
        return out


def _row(batch: Any, i: int) -> Any:
    """Row ``i`` of a batched observation (an array, or a dict of batched fields)."""
    if isinstance(batch, Mapping):
        return {k: v[i] for k, v in batch.items()}
    return np.asarray(batch[i])


def _stack(values: list[Any], template: Any) -> Any:
    """Rows back into a batch shaped like ``template`` (a batch, ``(B, ...)``): float32 state
    arrays, dicts of fields in their own dtypes, strings as object arrays."""
    if isinstance(template, Mapping):
        return {k: _stack([v[k] for v in values], template[k]) for k in template}
    arr = np.asarray(template)
    if arr.dtype.kind in "OU":
        return np.array([str(v) for v in values], dtype=object)  # (K,)
    dtype = arr.dtype if arr.dtype in (np.uint8, np.bool_) else np.float32
    return np.asarray(values, dtype).reshape(len(values), *arr.shape[1:])  # (K, ...)


def record_demos(
    *, tasks: Sequence[str], episodes: int, seed: int, num_joints: int, amap: Any,
    n_step: int = 1, gamma: float = 0.99,
) -> dict[str, np.ndarray]:  # fmt: skip
    """Scripted-expert transitions in the state-obs env, ``episodes`` per task (scene seeds from
    ``episode_seed``), as ``n_step``-step transitions (:class:`NStep`)."""
    from teamvla_data.sim import episode_seed, make_env, make_expert
    from teamvla_data.sim.record import expert_rng

    parts: list[dict[str, np.ndarray]] = []
    for task in tasks:
        env = make_env(task, obs_mode="state", render=False, num_joints=num_joints)
        for i in range(episodes):
            s = episode_seed(seed, task, i)
            obs, _ = env.reset(seed=s)
            expert = make_expert(task, expert_rng(s))
            acc = NStep(n=n_step, gamma=gamma, num_envs=1)
            terminated = truncated = False
            while not (terminated or truncated):
                action = expert.act(env.unwrapped)
                x = amap.from_env(action, obs)
                next_obs, reward, terminated, truncated, _ = env.step(action)
                parts.append(acc.push(obs=obs[None], action=x[None], reward=np.array([reward]),
                                      next_obs=next_obs[None], terminated=np.array([terminated]),
                                      truncated=np.array([truncated])))  # fmt: skip
                obs = next_obs
        env.close()
    return {k: np.concatenate([p[k] for p in parts]) for k in FIELDS}
