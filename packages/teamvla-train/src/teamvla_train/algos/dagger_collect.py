"""DAgger's data collection: roll out the policy mixed with the expert, label visited states with the expert.

One call of :func:`collect_iteration` plays ``episodes_per_task`` episodes of
each task in the simulated world, ``batch_envs`` at a time in lock step. At
each step, with probability ``beta`` the scripted expert's action is executed
(computed from the true world state, :meth:`teamvla_data.sim.Expert.act`),
otherwise the policy's (Ross et al. 2011's mixture policy
``pi_i = beta_i * expert + (1 - beta_i) * policy``, drawn per step).

Labels. The policy predicts action *chunks*: the target of a sample at state
``s_t`` is the next ``Ha`` actions. Labelling each visited state with the
expert's single action and storing the rollout would make that chunk the
expert's actions at the states the *policy* went through next, i.e. "follow
your own path", which teaches a slow or stuck policy to stay slow or stuck.
So every ``label_every``-th visited state is labelled with the expert's own
continuation from it: the world is copied and the expert acts from that state
for ``label_steps`` steps (about the chunk length); that branch is written as
an ordinary, validated episode (the expert's corrective actions from a state
the policy reached). The rollout itself goes on untouched.

Which rollouts are labelled: ``label_rollouts="all"`` labels every rollout;
``"failed"`` snapshots the world at each label point and labels only the
rollouts that end without success (the world reports success, so no expert
query decides it). Once the policy succeeds most of the time, that spends the
expert's labels only where the policy still fails.

Episodes are written with ``EpisodeWriter`` into one root per iteration; the
root is complete when its ``.complete`` marker exists (written atomically
last), so a collection killed half-way is redone from scratch on resume (same
weights, same seeds: the same data).
"""

from __future__ import annotations

import copy
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
    episodes: int = 0  # labelled episodes written (one per branch point)
    steps: int = 0  # expert-labelled steps written (every stored step holds an expert action)
    labelled_rollouts: int = 0  # rollouts whose visited states were labelled
    rollout_steps: int = 0  # steps of the mixed rollouts
    expert_steps: int = 0  # rollout steps where the expert's action was executed
    gate_queries: int = 0  # expert actions asked at label points to compare with the policy's
    success: dict[str, float] = field(default_factory=dict)  # per task, of the mixed policy

    @property
    def expert_actions(self) -> int:
        """Every action the expert gave: stored labels, executed rollout steps, unused gate queries.

        With the gate on, every written label starts with its point's gate query, so the
        unused queries are the queries less the labelled episodes.
        """
        unused = self.gate_queries - (self.episodes if self.gate_queries else 0)
        return self.steps + self.expert_steps + unused

    @property
    def intervention_rate(self) -> float:
        """Fraction of rollout steps executed by the expert."""
        return self.expert_steps / max(1, self.rollout_steps)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, with the intervention rate."""
        return {
            **asdict(self),
            "expert_actions": self.expert_actions,
            "intervention_rate": self.intervention_rate,
        }


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
    label_every: int = 4,
    label_steps: int = 16,
    label_rollouts: str = "all",
    label_gate: float = 0.0,
    image_codec: str | None = None,
    video_crf: int = 30,
) -> CollectStats:
    """Collect one DAgger iteration's expert-labelled episodes under ``root`` (see the module doc).

    ``image_codec`` / ``video_crf`` are the ``EpisodeWriter``'s: how the camera
    fields are stored (``None``: plain arrays; see docs/storage.md).
    """
    if label_every < 1 or label_steps < 1:
        raise ValueError(
            f"label_every and label_steps must be >= 1, received {label_every}, {label_steps}"
        )
    if label_rollouts not in ("all", "failed"):
        raise ValueError(f"label_rollouts must be 'all' or 'failed', received {label_rollouts!r}")
    if not (label_gate >= 0.0 and np.isfinite(label_gate)):
        raise ValueError(f"label_gate must be a finite value >= 0, received {label_gate}")
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
    with EpisodeWriter(root, image_codec=image_codec, video_crf=video_crf) as writer:
        for start in range(0, len(jobs), len(envs)):
            group = jobs[start : start + len(envs)]
            control.reset()
            _play_group(group, envs, control, writer, rng, stats, wins, base_seed, iteration, label_every, label_steps, label_rollouts == "failed", label_gate)  # fmt: skip
    stats.success = {t: float(np.mean(v)) if v else 0.0 for t, v in wins.items()}
    atomic_write_text(root / COMPLETE_MARKER, json.dumps(stats.to_dict(), indent=1) + "\n")
    return stats


def disagrees(policy_action: dict[str, Any], expert_action: dict[str, Any], tol: float) -> bool:
    """Whether two actions differ: a joint target by more than ``tol`` (radians) or a gripper command."""
    for arm in ("a", "b"):
        gap = np.abs(np.asarray(policy_action[f"action_{arm}"]) - expert_action[f"action_{arm}"])
        if gap.max() > tol or round(float(policy_action[f"grip_{arm}"])) != round(float(expert_action[f"grip_{arm}"])):  # fmt: skip
            return True
    return False


def _continue(
    branch: BimanualEnv, obs: dict[str, Any], task: str, seed: int, steps: int
) -> list[dict[str, Any]]:
    """The expert's own continuation from ``branch``, a copy of a visited world observed as ``obs``.

    Every step holds the observation and the expert's action there; the last is
    the final observation (success or ``steps`` reached) with the action the
    expert would take next, as in recorded demonstrations. The copy holds the
    world state and the renderer, so the rollout it was taken from goes on untouched.
    """
    expert = make_expert(task, expert_rng(seed), branch.task_cfgs[task])
    out = []
    for k in range(steps + 1):
        label = expert.act(branch)
        out.append({**{key: obs[key] for key in STEP_FIELDS}, **label, "phase": expert.phase})
        if k == steps or obs["success"]:
            break
        obs, _, done, _ = branch.step(label)
        if done and not obs["success"]:  # the task's step limit
            out.append({**{key: obs[key] for key in STEP_FIELDS}, **expert.act(branch), "phase": expert.phase})  # fmt: skip
            break
    return out


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
    label_every: int,
    label_steps: int,
    failed_only: bool,
    gate: float,
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
    t = 0
    done = [False] * n
    success = [False] * n
    # failed_only: (t, copy of the world, observation) per label point, labelled if the rollout fails.
    pending: list[list[tuple[int, BimanualEnv, dict[str, Any]]]] = [[] for _ in range(n)]

    def label(i: int, t: int, branch: BimanualEnv, seen: dict[str, Any]) -> None:
        task, index = group[i]
        steps = _continue(branch, seen, task, seeds[i], label_steps)
        _write(writer, steps, task, f"{task}-dagger{iteration:03d}-{index:06d}-t{t:04d}",
               {"seed": seeds[i], "iteration": iteration, "beta": stats.beta,
                "branch_step": t, "episode_index": index})  # fmt: skip
        stats.episodes += 1
        stats.steps += len(steps)  # the final observation's action too: the expert was asked for it

    while not all(done):
        active = [i for i in range(n) if not done[i]]
        proposals = control.act([obs[i] for i in active], active)
        for i, proposal in zip(active, proposals, strict=True) if t % label_every == 0 else ():
            if gate > 0:  # label only where the policy parts from the expert
                task = group[i][0]
                expert = make_expert(task, expert_rng(seeds[i]), envs[i].task_cfgs[task])
                asked = expert.act(envs[i])
                stats.gate_queries += 1
                if not disagrees(proposal, asked, gate):
                    continue
            if failed_only:
                pending[i].append((t, copy.deepcopy(envs[i]), obs[i]))
            else:
                label(i, t, copy.deepcopy(envs[i]), obs[i])
        for i, proposal in zip(active, proposals, strict=True):
            use_expert = bool(rng.random() < stats.beta)
            stats.rollout_steps += 1
            stats.expert_steps += use_expert
            action = experts[i].act(envs[i]) if use_expert else proposal
            obs[i], ok, env_done, _ = envs[i].step(action)
            success[i] = bool(ok)
            done[i] = bool(ok) or bool(env_done)
            if done[i]:
                if not success[i]:  # its saved label points (only failed_only saves any)
                    for point in pending[i]:
                        label(i, *point)
                pending[i] = []
        t += 1
    for i, (task, _) in enumerate(group):
        wins[task].append(success[i])
        stats.labelled_rollouts += not (failed_only and success[i])


def _write(
    writer: EpisodeWriter,
    steps: Sequence[dict[str, Any]],
    task: str,
    episode_id: str,
    user: dict[str, Any],
) -> None:
    writer.start_episode(
        {
            "task": task,
            "episode_id": episode_id,
            "user": {
                "generator": "teamvla_train.dagger",
                "instruction": steps[0]["instruction"],
                **user,
            },
        }
    )
    for step in steps:
        writer.add_step(step)
    writer.end_episode(success=bool(steps[-1]["success"]))
