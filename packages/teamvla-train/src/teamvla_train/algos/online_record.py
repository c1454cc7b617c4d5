"""Online episodes of the pixel worlds written out as ordinary episodes (``sac.record_online``).

:class:`EpisodeRecorder` collects every step of each world's episode (the
observation the actor saw, the env action it executed, the reward) and, when
the episode ends, writes it with :class:`teamvla_schema.EpisodeWriter`
(validated, atomic) to ``<root>/<task>/online-<env steps>-<world>.npz``, where
``<env steps>`` counts the transitions collected when it ended (zero-padded to
nine digits) and ``<world>`` is the world's index. The layout is what ``teamvla
synth`` writes: the last step is the final observation, with the action
"hold" (joint targets at the current joints, the grips as last commanded),
``reward`` 0 and ``done`` true; every other step carries the reward of its
own action and ``done`` false, and ``success`` is true only on the last step
of an episode that succeeded. :meth:`EpisodeRecorder.index` brings the root's
manifest up to date, so ``MultiTaskDataset`` (and ``sac.demo_roots``) read the
root like any recorded dataset.

A run resumed from a checkpoint deletes the episodes that ended after it
(:meth:`EpisodeRecorder.prune`): they are collected again, as the replay is.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

#: Episode ids of recorded online episodes: ``online-<env steps>-<world>``.
EPISODE_ID = re.compile(r"online-(?P<steps>\d{9})-(?P<world>\d{3})")
GENERATOR = "teamvla_train.online"


def episode_id(env_steps: int, world: int) -> str:
    """The id of the online episode of ``world`` that ended after ``env_steps`` transitions."""
    return f"online-{env_steps:09d}-{world:03d}"


class EpisodeRecorder:
    """Each world's episode in flight, written out when it ends (see the module docstring)."""

    def __init__(self, root: Path, *, tasks: Sequence[str]) -> None:
        from teamvla_schema import EpisodeWriter

        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.tasks = list(tasks)
        self.writer = EpisodeWriter(self.root, overwrite=True)
        self.steps: list[list[dict[str, Any]]] = [[] for _ in self.tasks]
        self.scene_seeds = [0] * len(self.tasks)
        self.written = 0  # episodes written by this process

    def reset(self, scene_seeds: Sequence[int]) -> None:
        """Every world starts an episode (``scene_seeds``): forget the steps in flight."""
        self.steps = [[] for _ in self.tasks]
        self.scene_seeds = [int(s) for s in scene_seeds]

    def add(self, raw: Mapping[str, Any], action: Mapping[str, Any], reward: np.ndarray) -> None:
        """One step of every world: its observation ``raw`` (batched env fields), the env action
        it executed (batched) and the reward that action earned."""
        for i, task in enumerate(self.tasks):
            step = {key: raw[key][i] for key in ("rgb_a", "rgb_b", "q_a", "q_b")}
            step.update({key: np.asarray(value[i], np.float32) for key, value in action.items()})
            step.update(instruction=str(raw["instruction"][i]), task=task, success=False,
                        reward=np.float32(reward[i]), done=False)  # fmt: skip
            self.steps[i].append(step)

    def finish(
        self,
        world: int,
        final: Mapping[str, Any],
        *,
        success: bool,
        env_steps: int,
        scene_seed: int,
    ) -> Path:
        """Write world ``world``'s episode, ended in ``final`` (its last observation, unbatched);
        ``scene_seed`` is the seed of the world's *next* episode (SameStep autoreset)."""
        steps = self.steps[world]
        last = steps[-1]
        hold = {"action_a": np.asarray(final["q_a"], np.float32), "action_b": np.asarray(final["q_b"], np.float32),
                "grip_a": last["grip_a"], "grip_b": last["grip_b"]}  # fmt: skip
        steps.append({**{k: final[k] for k in ("rgb_a", "rgb_b", "q_a", "q_b")}, **hold,
                      "instruction": str(final["instruction"]), "task": self.tasks[world],
                      "success": bool(success), "reward": np.float32(0.0), "done": True})  # fmt: skip
        meta = {"task": self.tasks[world], "episode_id": episode_id(env_steps, world),
                "user": {"generator": GENERATOR, "env_steps": int(env_steps), "world": int(world),
                         "seed": int(self.scene_seeds[world]),
                         "instruction": steps[0]["instruction"]}}  # fmt: skip
        self.writer.start_episode(meta)
        try:
            for step in steps:
                self.writer.add_step(step)
        except BaseException:
            self.writer.discard_episode()
            raise
        path = self.writer.end_episode(success=bool(success))
        self.written += 1
        self.steps[world] = []
        self.scene_seeds[world] = int(scene_seed)
        return path

    def prune(self, env_steps: int) -> list[Path]:
        """Delete the recorded episodes that ended after ``env_steps`` transitions (a resumed run
        collects them again); return their paths."""
        removed = []
        for path in sorted(self.root.glob("*/online-*.npz")):
            m = EPISODE_ID.fullmatch(path.stem)
            if m is not None and int(m["steps"]) > env_steps:
                path.unlink()
                removed.append(path)
        return removed

    def index(self) -> None:
        """Bring the root's manifest up to date (what ``MultiTaskDataset`` opens)."""
        from teamvla_data.manifest import update_manifest

        update_manifest(self.root)
