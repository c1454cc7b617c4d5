"""Evaluation of trained policies: offline action error and closed-loop success in the simulator.

``teamvla eval --checkpoint PATH`` (see :func:`teamvla_train.eval_report.run_eval_command`) runs, per checkpoint:

1. **Offline action error** on the validation split of the checkpoint's own
   dataset config (same roots, split seed and windows): MSE and L1 of the
   un-normalised joint targets over non-padded chunk steps, and gripper
   accuracy (probability thresholded at 0.5 against the recorded command).
2. **Closed-loop success** per task over the held-out seeds
   ``teamvla_data.sim.seeds.eval_seeds(task, n)`` (disjoint from every
   recording seed). Success is judged by the env against the block the
   instruction names.
3. **Language swap** (``eval.language_swap``): every scene is played again
   with its instruction rewritten to name the other block
   (``reset(task, seed, instruction=swapped)``), judged against the new
   instruction. A policy that ignores language scores about chance here at
   best (it goes for the same block whatever it is told).

Results are printed as a table and written atomically as JSON; ``--pictures``
adds a rollout GIF and PNG strip per task and the run's training curves.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from teamvla_schema.config import ConfigError, LoadedConfig, apply_overrides, from_dict, to_dict
from teamvla_schema.errors import SchemaError

from teamvla_train.config import EvalConfig
from teamvla_train.rollout import ChunkPolicy, EpisodeResult, EpisodeSpec, run_rollouts

log = logging.getLogger(__name__)

EVAL_FILE = "eval.json"
RESULTS_VERSION = 1
ACTION_FIELDS = ("action_a", "action_b")
GRIP_FIELDS = ("grip_a", "grip_b")


# =========================================================================== config


def eval_config_from(
    checkpoint_config: Mapping[str, Any] | None,
    *,
    overrides: Sequence[str] = (),
    episodes_per_task: int | None = None,
    tasks: Sequence[str] | None = None,
) -> EvalConfig:
    """The eval settings: the checkpoint's ``eval`` section, then ``eval.*`` overrides, then flags."""
    data = {"eval": dict((checkpoint_config or {}).get("eval") or {})}
    bad = [o for o in overrides if not o.strip().startswith("eval.")]
    if bad:
        raise ConfigError(
            f"only eval.* keys can be overridden here, received {bad}", source="override"
        )
    sources: dict[str, str] = {}
    data = apply_overrides(data, overrides, sources)
    if episodes_per_task is not None:
        data["eval"]["episodes_per_task"] = episodes_per_task
    if tasks is not None:
        data["eval"]["tasks"] = list(tasks)
    loaded = LoadedConfig(data, {"eval": "checkpoint", **sources}, ["checkpoint"])
    return from_dict(EvalConfig, data["eval"], key="eval", config=loaded)


def world_config_for(policy: Any, checkpoint_config: Mapping[str, Any] | None) -> Any:
    """The simulator world to evaluate ``policy`` in.

    Starts from the checkpoint config's ``task.world`` section when it has one.
    Joints come from the policy. Without a loader resize (``dataset.image_size``
    null) the training images were rendered at the policy's image size, so the
    env renders at that size too; otherwise the policy resizes the renders.
    """
    from teamvla_data.sim.config import WorldConfig

    cfg = dict(checkpoint_config or {})
    world_data = dict(((cfg.get("task") or {}).get("world")) or {})
    world = from_dict(WorldConfig, world_data, key="task.world", source="checkpoint config")
    dataset = cfg.get("dataset") or {}
    updates: dict[str, Any] = {"num_joints": int(policy.num_joints)}
    if dataset.get("image_size") is None and "image_size" not in world_data:
        updates["image_size"] = int(policy.image_size[0])
    return dataclasses.replace(world, **updates)


# =========================================================================== closed loop


@dataclasses.dataclass
class TaskOutcome:
    """Closed-loop results of one task (normal instructions and, optionally, swapped ones)."""

    task: str
    seeds: list[int]
    normal: list[EpisodeResult]
    swapped: list[EpisodeResult]

    @staticmethod
    def _rate(results: Sequence[EpisodeResult]) -> float | None:
        return sum(r.success for r in results) / len(results) if results else None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary."""
        out: dict[str, Any] = {
            "episodes": len(self.normal),
            "successes": sum(r.success for r in self.normal),
            "success_rate": self._rate(self.normal),
            "mean_steps": float(np.mean([r.steps for r in self.normal])) if self.normal else None,
            "step_limit": self.normal[0].step_limit if self.normal else None,
            "seeds": list(self.seeds),
        }
        if self.swapped:
            out.update(
                swap_episodes=len(self.swapped),
                swap_successes=sum(r.success for r in self.swapped),
                swap_success_rate=self._rate(self.swapped),
            )
        out["episodes_detail"] = [
            {
                "seed": r.spec.seed,
                "instruction": r.instruction,
                "success": r.success,
                "steps": r.steps,
                "swapped": i >= len(self.normal),
            }
            for i, r in enumerate([*self.normal, *self.swapped])
        ]
        return out


def closed_loop_eval(
    policy: ChunkPolicy,
    make_env: Callable[[], Any],
    cfg: EvalConfig,
    *,
    eval_seeds: Callable[[str, int], Sequence[int]] | None = None,
    swap_instruction: Callable[[str], str] | None = None,
    record_first: bool = False,
    progress: bool = True,
) -> dict[str, TaskOutcome]:
    """Closed-loop success per task of ``cfg.tasks`` (see the module docstring).

    ``eval_seeds`` and ``swap_instruction`` default to the simulator's
    (``teamvla_data.sim.seeds.eval_seeds`` and
    ``teamvla_data.sim.language.swap_instruction``). With ``record_first``,
    the first normal episode of each task keeps its frames (for pictures).
    """
    if eval_seeds is None:
        from teamvla_data.sim.seeds import eval_seeds as _eval_seeds

        eval_seeds = _eval_seeds
    if swap_instruction is None:
        from teamvla_data.sim.language import swap_instruction as _swap

        swap_instruction = _swap
    from tqdm import tqdm

    probe = make_env()  # resets are cheap: used to read each seed's own instruction
    specs: list[EpisodeSpec] = []
    seeds_of: dict[str, list[int]] = {}
    for task in cfg.tasks:
        seeds = [int(s) for s in eval_seeds(task, cfg.episodes_per_task)]
        seeds_of[task] = seeds
        specs.extend(EpisodeSpec(task, s) for s in seeds)
        if cfg.language_swap:
            for s in seeds:
                original = str(probe.reset(task, s)["instruction"])
                specs.append(EpisodeSpec(task, s, swap_instruction(original)))
    first = {task: EpisodeSpec(task, seeds[0]) for task, seeds in seeds_of.items() if seeds}
    record = (lambda spec: spec in first.values()) if record_first else False
    bar = tqdm(
        total=len(specs), desc="eval rollouts", unit="ep", disable=not progress, dynamic_ncols=True
    )
    results: list[EpisodeResult] = []
    # One task at a time keeps the lock-stepped groups' episode lengths similar.
    for task in cfg.tasks:
        task_specs = [s for s in specs if s.task == task]
        done = run_rollouts(
            policy,
            make_env,
            task_specs,
            batch_envs=cfg.batch_envs,
            replan_every=cfg.replan_every,
            temporal_ensemble=cfg.temporal_ensemble,
            max_steps=cfg.max_steps or None,
            record=record,
        )
        results.extend(done)
        bar.update(len(done))
        rate = sum(r.success for r in done if r.spec.instruction is None) / max(
            1, len(seeds_of[task])
        )
        bar.set_postfix_str(f"{task} {rate:.0%}")
    bar.close()
    out: dict[str, TaskOutcome] = {}
    for task in cfg.tasks:
        normal = [r for r in results if r.task == task and r.spec.instruction is None]
        swapped = [r for r in results if r.task == task and r.spec.instruction is not None]
        out[task] = TaskOutcome(task, seeds_of[task], normal, swapped)
    return out


# =========================================================================== offline


def offline_action_error(
    policy: Any,
    dataset_cfg: Mapping[str, Any] | Any,
    *,
    split: Literal["train", "val", "all"] = "val",
    max_batches: int = 0,
    batch_size: int = 64,
) -> dict[str, Any]:
    """Action error of ``policy`` on ``split`` of a dataset config (raw, un-normalised units).

    Returns overall and per-task ``joint_mse``, ``joint_l1`` (mean over arms,
    joints and non-padded chunk steps) and ``grip_accuracy``, plus the number of
    samples. The dataset is read without normalisation or augmentation: the
    policy normalises its inputs itself.
    """
    from teamvla_data import MultiTaskDataset
    from teamvla_data.config import as_dataset_config

    cfg = as_dataset_config(dataset_cfg)
    ds = MultiTaskDataset(
        cfg.roots,
        tasks=cfg.tasks,
        success_only=cfg.success_only,
        max_episodes_per_task=cfg.max_episodes_per_task,
        split=split,
        val_fraction=cfg.val_fraction,
        split_seed=cfg.split_seed,
        obs_history=policy.obs_history,
        action_horizon=policy.action_horizon,
        on_error=cfg.on_error,
        use_cache=cfg.use_cache,
        cache_dir=cfg.cache_dir,
        cache_max_bytes=cfg.cache_max_bytes,  # no full image copy when the run has a budget
    )
    n = len(ds)
    # Evenly spaced samples when capped, so every episode contributes.
    if max_batches:
        idx_all = np.unique(
            np.linspace(0, n - 1, min(n, max_batches * batch_size)).round().astype(np.int64)
        )
    else:
        idx_all = np.arange(n, dtype=np.int64)
    sums: dict[str, dict[str, float]] = {}

    def acc(task: str, key: str, value: float) -> None:
        sums.setdefault(task, {}).setdefault(key, 0.0)
        sums[task][key] += value

    for start in range(0, len(idx_all), batch_size):
        batch = ds.__getitems__(idx_all[start : start + batch_size])
        pred = policy.predict_chunk(batch)
        valid = ~np.asarray(batch["action_is_pad"], dtype=bool)  # (B, Ha)
        for i, task in enumerate(batch["task"]):
            v = valid[i]
            for arm_key in ACTION_FIELDS:
                err = (
                    pred[arm_key][i][v] - np.asarray(batch[arm_key][i], np.float32)[v]
                )  # (steps, N)
                acc(task, "sq", float(np.square(err, dtype=np.float64).sum()))
                acc(task, "abs", float(np.abs(err, dtype=np.float64).sum()))
                acc(task, "joint_values", float(err.size))
            for grip_key in GRIP_FIELDS:
                hit = (pred[grip_key][i][v] > 0.5) == (np.asarray(batch[grip_key][i])[v] > 0.5)
                acc(task, "grip_hits", float(hit.sum()))
                acc(task, "grip_values", float(hit.size))
            acc(task, "samples", 1.0)

    def summarise(s: Mapping[str, float]) -> dict[str, Any]:
        values = max(s.get("joint_values", 0.0), 1.0)
        return {
            "samples": int(s.get("samples", 0)),
            "joint_mse": s.get("sq", 0.0) / values,
            "joint_l1": s.get("abs", 0.0) / values,
            "grip_accuracy": s.get("grip_hits", 0.0) / max(s.get("grip_values", 0.0), 1.0),
        }

    total: dict[str, float] = {}
    for per_task in sums.values():
        for k, v in per_task.items():
            total[k] = total.get(k, 0.0) + v
    return {
        "split": split,
        **summarise(total),
        "per_task": {t: summarise(s) for t, s in sorted(sums.items())},
    }


# =========================================================================== one checkpoint


def evaluate_policy(
    policy: Any,
    cfg: EvalConfig,
    *,
    checkpoint_config: Mapping[str, Any] | None = None,
    make_env: Callable[[], Any] | None = None,
    offline: bool = True,
    pictures_dir: str | os.PathLike[str] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Evaluate a loaded policy; returns the JSON-ready results (see :func:`teamvla_train.eval_report.evaluate_checkpoint`)."""
    config = dict(checkpoint_config or getattr(policy, "config", None) or {})
    t0 = time.perf_counter()
    # a sac/awac actor (state or pixels): no dataset, one action per step in its own env
    state = bool(getattr(policy, "actor_critic", False))
    results: dict[str, Any] = {
        "model": f"{policy.algo}-{policy.obs_mode}-actor"
        if state
        else (config.get("model") or {}).get("name"),
        "eval_config": to_dict(cfg),
    }
    if offline and not state:
        try:
            if not config.get("dataset"):
                raise SchemaError("the checkpoint records no dataset config")
            results["offline"] = offline_action_error(
                policy, config["dataset"], max_batches=cfg.offline_batches
            )
        except (SchemaError, OSError) as exc:
            # A missing dataset or an empty val split must not cost the closed-loop numbers.
            log.warning("offline action error skipped: %s", exc)
            results["offline"] = {"skipped": str(exc)}
    t1 = time.perf_counter()
    if make_env is None and not state:
        from teamvla_data.sim.world import BimanualEnv

        world = world_config_for(policy, config)
        results["world"] = to_dict(world)

        def make_env() -> Any:
            return BimanualEnv(world)

    if state:
        from teamvla_train.algos.online import state_closed_loop_eval

        outcomes = state_closed_loop_eval(policy, cfg)
    else:
        assert make_env is not None
        outcomes = closed_loop_eval(
            policy, make_env, cfg, record_first=pictures_dir is not None, progress=progress
        )
    closed = {task: o.to_dict() for task, o in outcomes.items()}
    results["closed_loop"] = closed
    results["mean_success_rate"] = float(np.mean([c["success_rate"] for c in closed.values()]))
    if cfg.language_swap:
        results["mean_swap_success_rate"] = float(
            np.mean([c["swap_success_rate"] for c in closed.values()])
        )
    results["timing_s"] = {
        "offline": round(t1 - t0, 3),
        "closed_loop": round(time.perf_counter() - t1, 3),
    }
    if pictures_dir is not None:
        results["pictures"] = write_rollout_pictures(outcomes, pictures_dir, gif=cfg.save_gifs)
    return results


def write_rollout_pictures(
    outcomes: Mapping[str, TaskOutcome], out_dir: str | os.PathLike[str], *, gif: bool = True
) -> list[str]:
    """A PNG strip (and a GIF) of the first recorded episode of each task."""
    from teamvla_train.plots import rollout_gif, rollout_strip

    written = []
    for task, outcome in outcomes.items():
        ep = next((r for r in outcome.normal if r.frames), None)
        if ep is None:
            continue
        outcome_text = "success" if ep.success else "failure"
        title = f'{task}, seed {ep.spec.seed}: "{ep.instruction}" -> {outcome_text} after {ep.steps} steps'
        stem = Path(out_dir) / f"rollout_{task}"
        written.append(str(rollout_strip(ep.frames, stem.with_suffix(".png"), title=title)))  # type: ignore[arg-type]
        if gif:
            written.append(str(rollout_gif(ep.frames, stem.with_suffix(".gif"), title=task)))  # type: ignore[arg-type]
    return written
