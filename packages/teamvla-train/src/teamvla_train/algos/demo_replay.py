"""Demonstration transitions from recorded episodes, read through teamvla-data's dataloader.

The pixel path of the demo buffer ("leverage the dataloader for replay buffer
seeding"). :func:`dataset_transitions` opens episode roots with
:func:`teamvla_data.make_dataloader` (split ``all``: every step once, in order;
no normalisation, no augmentation; images resized by the loader to the
worlds' camera size; not sharded: under ``torchrun`` every rank reads every
demonstration), reads each episode's ``reward``, ``done`` and ``success`` step
fields (written by ``teamvla synth`` and by ``sac.record_online``) from its
file, and returns n-step transitions exactly as the online worlds make them
(:class:`teamvla_train.algos.replay.NStep`):

* step ``t`` of an episode of ``T`` steps is the observation ``s_t`` (both
  cameras, joints, the gripper state ``grip_{t-1}`` (0 at ``t = 0``), the
  instruction) and the recorded action ``a_t``, mapped to the actor's flat
  action by ``ActionMap.from_env(a_t, joints_t)`` (delta actions step from the
  current joints);
* the last step is the final observation (its action was never executed), so
  an episode gives ``T - 1`` transitions; transition ``t`` reaches ``t + k``
  with ``k = min(n, T - 1 - t)``, ``R = sum_{i<k} gamma^i r_{t+i}``, and is
  ``done`` (no bootstrap) when ``t + k = T - 1`` and the episode succeeded
  (its last step's ``success``); an episode that hit the step limit is truncated.

Episodes recorded without ``reward``/``done`` (before ``teamvla synth`` stored
them) are refused with a :class:`SchemaError` naming the file and the field.
:func:`record_pixel_demos` records scripted-expert episodes for a run that
names no roots (``<run>/demos``, as ``teamvla synth`` would), once.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from teamvla_data.batch import (
    ACTION_A,
    ACTION_B,
    EPISODE_INDEX,
    FRAME_INDEX,
    GRIP_A,
    GRIP_B,
    INSTRUCTION,
    Q_A,
    Q_B,
    RGB_A,
    RGB_B,
)
from teamvla_schema import SchemaError

from teamvla_train.algos.replay import ACTION, DONE, NEXT_OBS, NSTEPS, OBS, REWARD
from teamvla_train.models.pixel_nets import PROPRIO

#: Step fields a demonstration episode must hold besides the dataset's.
REWARD_FIELDS = ("reward", "done")
COMPLETE = ".complete"
#: Per-step fields collected from the loader, in dataset order.
_COLUMNS = (RGB_A, RGB_B, Q_A, Q_B, ACTION_A, ACTION_B, GRIP_A, GRIP_B)


def nstep_index(rewards: np.ndarray, *, terminated: bool, n: int, gamma: float) -> dict[str, np.ndarray]:  # fmt: skip
    """The n-step transitions of one recorded episode of ``T = len(rewards)`` steps.

    Returns, for ``t = 0 .. T - 2``: ``next`` (``t + k``), ``reward`` (``sum_{i<k} gamma^i r_{t+i}``),
    ``nsteps`` (``k = min(n, T - 1 - t)``) and ``done`` (``terminated`` and ``t + k = T - 1``).
    """
    last = len(rewards) - 1
    t = np.arange(max(last, 0))  # (T - 1,)
    nxt = np.minimum(t + n, last)  # (T - 1,)
    k = nxt - t
    ret = np.array(
        [
            sum(gamma**i * float(rewards[s + i]) for i in range(int(kk)))
            for s, kk in zip(t, k, strict=True)
        ],
        np.float32,
    )  # (T - 1,)
    return {"next": nxt, "reward": ret, "nsteps": k.astype(np.float32),
            "done": np.asarray((nxt == last) & bool(terminated), bool)}  # fmt: skip


def reward_fields(record: Any) -> dict[str, np.ndarray]:
    """``reward``, ``done`` and ``success`` of one manifest record's episode, checked."""
    from teamvla_data.episode_reads import read_checked
    from teamvla_schema.episode import read_episode_meta

    present = read_episode_meta(record.abs_path).fields
    for name in REWARD_FIELDS:
        if name not in present:
            raise SchemaError(
                f"a demonstration episode needs the step field {name!r} (reward and done, written by "
                "teamvla synth since it records rewards, and by sac.record_online); this file was "
                "recorded without it: record it again",
                path=record.abs_path, field=name,
            )  # fmt: skip
    ep = read_checked(record, [*REWARD_FIELDS, "success"])
    done = np.asarray(ep.arrays["done"], bool)
    if not done[-1] or done[:-1].any():
        raise SchemaError("'done' must be true on the last step only", path=record.abs_path, field="done")  # fmt: skip
    return {k: np.asarray(v) for k, v in ep.arrays.items()}


def dataset_transitions(
    *, roots: Sequence[str | Path], tasks: Sequence[str], image_size: int, amap: Any,
    n_step: int, gamma: float, max_episodes_per_task: int | None = None, batch_size: int = 256,
) -> dict[str, Any]:  # fmt: skip
    """Every transition of the selected episodes of ``roots`` as ``PixelReplayBuffer.add_batch``
    arguments (see the module docstring). ``max_episodes_per_task``: at most that many episodes
    per task (teamvla-data's seeded selection, ``DatasetConfig.max_episodes_per_task``)."""
    from teamvla_data import DatasetConfig, MultiTaskDataset, make_dataloader

    cfg = DatasetConfig(
        roots=[str(r) for r in roots], tasks=list(tasks), max_episodes_per_task=max_episodes_per_task,
        obs_history=0, action_horizon=1, image_size=[image_size, image_size], normalize=False,
        batch_size=batch_size, num_workers=0, pin_memory=False,
    )  # fmt: skip
    dataset = MultiTaskDataset.from_config(cfg, "all")
    # every step once on every rank (each rank of a torchrun job holds all the demonstrations)
    loader = make_dataloader(cfg, split="all", dataset=dataset, rank=0, world_size=1)
    episodes = dataset.episodes
    fields = [reward_fields(ep.record) for ep in episodes]  # refuses old files before any image
    cols: dict[str, list[np.ndarray]] = {k: [] for k in (*_COLUMNS, EPISODE_INDEX, FRAME_INDEX)}
    texts: list[str] = []
    for batch in loader:
        for key in cols:
            value = np.asarray(batch[key])
            cols[key].append(value[:, 0] if value.ndim > 1 and key not in (EPISODE_INDEX, FRAME_INDEX) else value)  # fmt: skip
        texts.extend(batch[INSTRUCTION])
    col = {k: np.concatenate(v) for k, v in cols.items()}  # (L, ...) every step of every episode
    if 2 * col[Q_A].shape[1] != amap.joints:
        raise SchemaError(
            f"the episodes have {col[Q_A].shape[1]} joints per arm, the actor {amap.joints // 2} "
            "(model.num_joints)", path=episodes[0].path, field=Q_A,
        )  # fmt: skip
    order = np.lexsort((col[FRAME_INDEX], col[EPISODE_INDEX]))  # the loader's order, made sure
    col = {k: v[order] for k, v in col.items()}
    instructions = np.array(texts, dtype=object)[order]
    parts: list[dict[str, Any]] = []
    start = 0
    for ep, f in zip(episodes, fields, strict=True):
        rows = np.arange(start, start + ep.num_steps)  # (T,)
        start += ep.num_steps
        if len(f["reward"]) != ep.num_steps:
            raise SchemaError("reward has another length than the episode", path=ep.path, field="reward")  # fmt: skip
        grips = np.stack([col[GRIP_A][rows], col[GRIP_B][rows]], axis=1).astype(
            np.float32
        )  # (T, 2)
        prev = np.concatenate([np.zeros((1, 2), np.float32), grips[:-1]])  # (T, 2) gripper state
        joints = np.concatenate([col[Q_A][rows], col[Q_B][rows]], axis=1)  # (T, 2N)
        proprio = np.concatenate([joints, prev], axis=1).astype(np.float32)  # (T, 2N + 2)
        idx = nstep_index(f["reward"], terminated=bool(f["success"][-1]), n=n_step, gamma=gamma)
        t = np.arange(len(idx["next"]))  # (T - 1,)
        action = np.stack([
            amap.from_env({ACTION_A: col[ACTION_A][r], ACTION_B: col[ACTION_B][r],
                           GRIP_A: col[GRIP_A][r], GRIP_B: col[GRIP_B][r]}, proprio[s])
            for s, r in zip(t, rows[t], strict=True)
        ]).reshape(len(t), amap.dim)  # (T - 1, D)  # fmt: skip

        def obs_at(steps: np.ndarray, rows: np.ndarray = rows, proprio: np.ndarray = proprio) -> dict[str, Any]:  # fmt: skip
            r = rows[steps]
            return {RGB_A: col[RGB_A][r], RGB_B: col[RGB_B][r], PROPRIO: proprio[steps],
                    INSTRUCTION: instructions[r]}  # fmt: skip

        parts.append({OBS: obs_at(t), ACTION: action, REWARD: idx["reward"], NEXT_OBS: obs_at(idx["next"]),
                      DONE: idx["done"], NSTEPS: idx["nsteps"]})  # fmt: skip
    return _concat(parts)


def _concat(parts: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in parts[0].items():
        if isinstance(value, dict):
            out[key] = {k: np.concatenate([p[key][k] for p in parts]) for k in value}
        else:
            out[key] = np.concatenate([p[key] for p in parts])
    return out


def record_pixel_demos(
    root: Path, *, tasks: Sequence[str], episodes: int, seed: int, image_size: int, num_joints: int
) -> Path:
    """Record ``episodes`` scripted-expert episodes per task into ``root`` (as ``teamvla synth``
    would: the same scene seeds as the state demos), unless a complete recording is there."""
    from teamvla_data.sim import generate_dataset
    from teamvla_schema.atomic import atomic_write_text

    if (root / COMPLETE).is_file():
        return root
    generate_dataset(root, tasks=list(tasks), episodes_per_task=episodes, seed=seed, workers=1,
                     image_size=image_size, num_joints=num_joints, overwrite=True, progress=False,
                     image_codec="none")  # fmt: skip
    atomic_write_text(root / COMPLETE, '{"demos": true}\n')
    return root


def pixel_demo_buffer(
    *, roots: Sequence[str | Path] | None, record_root: Path, episodes: int, tasks: Sequence[str],
    seed: int, image_size: int, num_joints: int, amap: Any, n_step: int, gamma: float, dist: Any,
) -> Any:  # fmt: skip
    """The pixel demo buffer (:class:`~teamvla_train.algos.pixel_replay.PixelReplayBuffer`) of the
    transitions of ``roots`` (at most ``episodes`` per task; 0: all), or, with no roots, of
    ``episodes`` scripted demos per task recorded into ``record_root``; None with neither. Under
    ``torchrun`` (``dist``, a :class:`~teamvla_train.engine.distributed.DistInfo`) rank 0 records
    while the other ranks wait, and every rank holds every demonstration."""
    from teamvla_train.algos.pixel_replay import PixelReplayBuffer
    from teamvla_train.engine.distributed import barrier

    chosen = [Path(r) for r in roots or []]
    if not chosen:
        if not episodes:
            return None
        for turn in ("main", "others"):  # rank 0 records; the others then find it complete
            if (turn == "main") == dist.is_main:
                chosen = [record_pixel_demos(record_root, tasks=tasks, episodes=episodes, seed=seed,
                                             image_size=image_size, num_joints=num_joints)]  # fmt: skip
            if turn == "main":
                barrier(dist)
    demos = dataset_transitions(roots=chosen, tasks=tasks, image_size=image_size, amap=amap,
                                n_step=n_step, gamma=gamma, max_episodes_per_task=episodes or None)  # fmt: skip
    buf = PixelReplayBuffer(capacity=max(1, len(demos[REWARD])), image_size=(image_size, image_size),
                            proprio_dim=2 * int(num_joints) + 2, action_dim=amap.dim)  # fmt: skip
    buf.add_batch(**demos)
    return buf
