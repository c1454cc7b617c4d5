"""DAgger's data collection: roll out the policy mixed with the expert, label every state with the expert.

One call of :func:`collect_iteration` plays ``episodes_per_task`` episodes of
each task in the simulated world, ``batch_envs`` at a time in lock step. At
every step the scripted expert computes its action from the true world state
(:meth:`teamvla_data.sim.Expert.act`); with probability ``beta`` that action is
executed, otherwise the policy's (Ross et al. 2011's mixture policy
``pi_i = beta_i * expert + (1 - beta_i) * policy``, drawn per step). Whatever
was executed, the step is recorded with the **expert's** action as its label,
so the aggregate dataset teaches the policy what the expert would do in the
states the policy itself reaches.

Episodes are ordinary validated episode files written with ``EpisodeWriter``
into one root per iteration; the root is complete when its ``.complete``
marker exists (written atomically last), so a collection killed half-way is
redone from scratch on resume (same weights, same seeds: the same data).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from teamvla_data.sim import BimanualEnv, WorldConfig, expert_rng, make_expert
from teamvla_data.sim.seeds import EVAL_SEED_START
from teamvla_schema import EpisodeWriter
from teamvla_schema.atomic import atomic_write_text

from teamvla_train.control import ChunkController, ChunkPolicy

COMPLETE_MARKER = ".complete"
STEP_FIELDS = ("rgb_a", "rgb_b", "q_a", "q_b", "instruction", "task", "success")


def beta_at(iteration: int, *, schedule: str, beta0: float, rampdown: int) -> float:
    """Probability of executing the expert's action in DAgger iteration ``iteration`` (0-based).

    ``linear``: ``beta0 * max(0, 1 - iteration / rampdown)`` (the ``imitation``
    library's linear schedule); ``exponential``: ``beta0 ** (iteration + 1)``
    (Ross et al.'s ``p^i``); ``constant``: ``beta0``; ``zero``: 0 (pure DAgger).
    """
    if schedule == "linear":
        return beta0 * max(0.0, 1.0 - iteration / max(1, rampdown))
    if schedule == "exponential":
        return beta0 ** (iteration + 1)
    if schedule == "constant":
        return beta0
    if schedule == "zero":
        return 0.0
    raise ValueError(f"unknown beta schedule {schedule!r} (linear, exponential, constant or zero)")


def dagger_seed(base_seed: int, iteration: int, task: str, index: int) -> int:
    """Scene seed of DAgger episode ``index`` of ``task`` in ``iteration``: below the evaluation range."""
    digest = hashlib.blake2b(
        f"teamvla-dagger/{base_seed}/{iteration}/{task}/{index}".encode(), digest_size=8
    ).digest()
    return int.from_bytes(digest, "little") % EVAL_SEED_START


@dataclass
class CollectStats:
    """What one collection produced (written to ``<root>/.complete`` and to the metrics)."""

    iteration: int
    beta: float
    episodes: int = 0
    steps: int = 0
    expert_steps: int = 0  # steps where the expert's action was executed
    success: dict[str, float] = field(default_factory=dict)  # per task, of the mixed policy

    @property
    def intervention_rate(self) -> float:
        """Fraction of steps executed by the expert."""
        return self.expert_steps / max(1, self.steps)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, with the intervention rate."""
        return {**asdict(self), "intervention_rate": self.intervention_rate}


def is_complete(root: Path) -> bool:
    """Whether the collection into ``root`` finished."""
    return (root / COMPLETE_MARKER).is_file()


def read_stats(root: Path) -> dict[str, Any]:
    """The stats a finished collection wrote."""
    return dict(json.loads((root / COMPLETE_MARKER).read_text(encoding="utf-8")))


def collect_iteration(
    policy: ChunkPolicy,
    *,
    root: Path,
    tasks: Sequence[str],
    episodes_per_task: int,
    iteration: int,
    beta: float,
    base_seed: int = 0,
    world: WorldConfig | None = None,
    batch_envs: int = 8,
    replan_every: int = 4,
) -> CollectStats:
    """Collect one DAgger iteration's expert-labelled episodes under ``root`` (see the module doc)."""
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"beta must be in [0, 1], received {beta}")
    if root.exists():  # an unfinished collection of a killed run: redo it whole
        shutil.rmtree(root)
    root.mkdir(parents=True)
    world = world or WorldConfig()
    rng = np.random.default_rng([base_seed, iteration, 0xDA66E2])
    jobs = [(t, i) for t in tasks for i in range(episodes_per_task)]
    stats = CollectStats(iteration=iteration, beta=beta)
    wins: dict[str, list[bool]] = {t: [] for t in tasks}
    envs = [BimanualEnv(world) for _ in range(min(batch_envs, max(1, len(jobs))))]
    control = ChunkController(policy, len(envs), replan_every=replan_every)
    with EpisodeWriter(root) as writer:
        for start in range(0, len(jobs), len(envs)):
            group = jobs[start : start + len(envs)]
            control.reset()
            _play_group(group, envs, control, writer, rng, stats, wins, base_seed, iteration)
    stats.success = {t: float(np.mean(v)) if v else 0.0 for t, v in wins.items()}
    atomic_write_text(root / COMPLETE_MARKER, json.dumps(stats.to_dict(), indent=1) + "\n")
    return stats


def _play_group(
    group: Sequence[tuple[str, int]],
    envs: Sequence[BimanualEnv],
    control: ChunkController,
    writer: EpisodeWriter,
    rng: np.random.Generator,
    stats: CollectStats,
    wins: dict[str, list[bool]],
    base_seed: int,
    iteration: int,
) -> None:
    n = len(group)
    obs: list[dict[str, Any]] = []
    experts = []
    seeds = []
    for env, (task, index) in zip(envs, group, strict=False):
        seed = dagger_seed(base_seed, iteration, task, index)
        seeds.append(seed)
        obs.append(env.reset(task, seed))
        experts.append(make_expert(task, expert_rng(seed), env.task_cfgs[task]))
    steps: list[list[dict[str, Any]]] = [[] for _ in range(n)]
    by_expert = [0] * n
    done = [False] * n
    while not all(done):
        active = [i for i in range(n) if not done[i]]
        proposals = control.act([obs[i] for i in active], active)
        for i, proposal in zip(active, proposals, strict=True):
            label = experts[i].act(envs[i])  # the expert's action in this very state
            steps[i].append(
                {**{k: obs[i][k] for k in STEP_FIELDS}, **label, "phase": experts[i].phase}
            )
            use_expert = bool(rng.random() < stats.beta)
            by_expert[i] += use_expert
            obs[i], success, env_done, _ = envs[i].step(label if use_expert else proposal)
            if success or env_done:
                done[i] = True
                # The final observation, labelled with the action the expert would take there.
                last = experts[i].act(envs[i])
                steps[i].append(
                    {**{k: obs[i][k] for k in STEP_FIELDS}, **last, "phase": experts[i].phase}
                )
    for i, (task, index) in enumerate(group):
        success = bool(steps[i][-1]["success"])
        writer.start_episode(
            {
                "task": task,
                "episode_id": f"{task}-dagger{iteration:03d}-{index:06d}",
                "user": {
                    "generator": "teamvla_train.dagger",
                    "seed": seeds[i],
                    "iteration": iteration,
                    "beta": stats.beta,
                    "expert_steps": by_expert[i],
                    "instruction": steps[i][0]["instruction"],
                },
            }
        )
        for step in steps[i]:
            writer.add_step(step)
        writer.end_episode(success=success)
        stats.episodes += 1
        stats.steps += len(steps[i]) - 1
        stats.expert_steps += by_expert[i]
        wins[task].append(success)
