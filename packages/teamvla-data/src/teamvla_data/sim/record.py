"""Recording expert demonstrations with the schema's EpisodeWriter, in parallel processes.

``generate_dataset`` is the embedded default dataset of ``teamvla demo`` and
the backend of ``teamvla synth``. Every episode is a pure function of
``(base seed, task, index)`` and the configuration, so the same call always
writes byte-identical files whatever the number of workers.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from teamvla_schema.config import from_dict, to_dict
from teamvla_schema.episode import EpisodeWriter
from teamvla_schema.errors import SchemaError

from teamvla_data.sim.config import TASKS, StorageConfig, TaskConfig, default_task_config
from teamvla_data.sim.experts import Expert, make_expert
from teamvla_data.sim.registry import check_task
from teamvla_data.sim.seeds import episode_seed
from teamvla_data.sim.world import BimanualEnv

GENERATOR = "teamvla_data.sim"
_EXPERT_STREAM = 0x5EED  # the expert's random stream is (episode seed, this)


@dataclass(frozen=True)
class EpisodeResult:
    """What recording one episode produced."""

    path: Path
    task: str
    seed: int
    success: bool
    num_steps: int


def expert_rng(seed: int) -> np.random.Generator:
    """The random generator of the expert of the episode with environment seed ``seed``."""
    return np.random.default_rng([seed, _EXPERT_STREAM])


def run_expert(
    env: BimanualEnv,
    task: str,
    seed: int,
    expert: Expert | None = None,
    instruction: str | None = None,
) -> Iterator[dict[str, Any]]:
    """Run the scripted expert for one episode and yield every step (observation + action + phase).

    The last step is the final observation (success or step limit) with the
    action the expert would take there, so an episode's last ``success`` is its outcome.
    Each step also carries ``reward`` (float32: what ``env.step`` returned for
    this step's action; 0 on the last step, whose action is not executed) and
    ``done`` (true on the last step only).
    """
    obs = env.reset(task, seed, instruction)
    if expert is None:
        expert = make_expert(task, expert_rng(seed), env.task_cfg)
    done = False
    while True:
        action = expert.act(env)
        step = {**obs, **action, "phase": expert.phase}
        if done:
            yield {**step, "reward": np.float32(0.0), "done": True}
            return
        obs, _, done, info = env.step(action)
        yield {**step, "reward": np.float32(info["reward"]), "done": False}


def record_episode(
    writer: EpisodeWriter,
    env: BimanualEnv,
    task: str,
    seed: int,
    *,
    episode_id: str | None = None,
    instruction: str | None = None,
    user: Mapping[str, Any] | None = None,
) -> EpisodeResult:
    """Record one expert episode of ``task`` from ``seed`` with ``writer`` and return its result.

    The episode's ``user`` metadata holds the seed, the target block, the
    instruction, the world settings and the expert's per-episode parameters
    (plus anything in ``user``).
    """
    if writer.in_episode:
        raise SchemaError("record_episode() needs a writer with no open episode")
    expert = make_expert(task, expert_rng(seed), env.task_cfgs[task])
    success = False
    try:
        for step in run_expert(env, task, seed, expert, instruction):
            if not writer.in_episode:  # first step: the reset has fixed target and instruction
                state = env.state
                meta_user = {
                    "generator": GENERATOR,
                    "seed": int(seed),
                    "target": state.target_color,
                    "instruction": state.instruction,
                    "num_joints": env.num_joints,
                    "image_size": env.world_cfg.image_size,
                    "max_steps": int(env.task_cfg.max_steps or 0),
                    "expert": expert.describe(),
                    **dict(user or {}),
                }
                meta: dict[str, Any] = {"task": task, "user": meta_user}
                if episode_id:
                    meta["episode_id"] = episode_id
                writer.start_episode(meta)
            writer.add_step(step)
            success = step["success"]
    except BaseException:
        if writer.in_episode:
            writer.discard_episode()
        raise
    num_steps = writer.num_steps
    path = writer.end_episode(success=success)
    return EpisodeResult(path, task, int(seed), bool(success), num_steps)


# --------------------------------------------------------------------------- datasets


def episode_id_for(task: str, index: int) -> str:
    """The episode id of episode ``index`` of ``task`` in a generated dataset."""
    return f"{task}-{index:06d}"


_WORKER: dict[str, Any] = {}


def _init_worker(
    root: str, cfg_dicts: dict[str, dict[str, Any]], base_seed: int, overwrite: bool
) -> None:
    # Runs in each worker process (spawn-safe: only plain data crosses the process boundary).
    cfgs = {t: from_dict(TaskConfig, d, key="task") for t, d in cfg_dicts.items()}
    _WORKER.update(
        root=root,
        base_seed=base_seed,
        envs={t: BimanualEnv(c.world, {t: c}) for t, c in cfgs.items()},
        # One writer per task: each task's storage section chooses its image codec.
        writers={t: _writer(root, c, overwrite) for t, c in cfgs.items()},
    )


def _writer(root: str, cfg: TaskConfig, overwrite: bool) -> EpisodeWriter:
    """The episode writer for one task, with that task's storage settings."""
    storage = cfg.storage
    return EpisodeWriter(
        root, overwrite=overwrite, image_codec=storage.image_codec, video_crf=storage.video_crf
    )


def _record_job(job: tuple[str, int]) -> tuple[str, str, int, bool, int]:
    task, index = job
    seed = episode_seed(_WORKER["base_seed"], task, index)
    res = record_episode(
        _WORKER["writers"][task],
        _WORKER["envs"][task],
        task,
        seed,
        episode_id=episode_id_for(task, index),
        user={"base_seed": _WORKER["base_seed"], "episode_index": index},
    )
    return str(res.path), task, res.seed, res.success, res.num_steps


UNGUARDED_MAIN_HINT = (
    "worker processes of generate_dataset(workers > 1) could not start: when it is called from "
    'a script, put the call under `if __name__ == "__main__":` (spawned workers re-import '
    "the script), or pass workers=1"
)


def _record_in_processes(
    jobs: Sequence[tuple[str, int]],
    workers: int,
    cfg_dicts: dict[str, dict[str, Any]],
    root: str,
    seed: int,
    overwrite: bool,
) -> Iterator[str]:
    """Record ``jobs`` in ``workers`` spawned processes; yield each episode's path in job order.

    A ``ProcessPoolExecutor`` rather than ``multiprocessing.Pool``: when a worker
    dies (killed, out of memory, failing on import) the executor breaks and the
    failure surfaces here, where a ``Pool`` would silently start a new worker and
    wait for the lost job for ever.
    """
    ctx = mp.get_context("spawn")
    try:
        with ProcessPoolExecutor(
            workers,
            mp_context=ctx,
            initializer=_init_worker,
            initargs=(root, cfg_dicts, seed, overwrite),
        ) as pool:
            for out in pool.map(_record_job, jobs):
                yield out[0]
    except BrokenProcessPool as exc:
        main = sys.modules.get("__main__")
        unguarded = getattr(main, "__file__", None) is not None and not getattr(
            main, "__spec__", None
        )
        hint = f"; {UNGUARDED_MAIN_HINT}" if unguarded else ""
        raise RuntimeError(
            f"a worker process of generate_dataset died before finishing its episodes ({exc}){hint}"
        ) from None


def generate_dataset(
    root: str | os.PathLike[str],
    tasks: Sequence[str] = TASKS,
    episodes_per_task: int = 10,
    seed: int = 0,
    workers: int = 1,
    image_size: int | None = None,
    *,
    num_joints: int | None = None,
    task_cfgs: Mapping[str, TaskConfig] | None = None,
    overwrite: bool = False,
    progress: bool = True,
    image_codec: str | None = None,
    video_crf: int | None = None,
) -> list[Path]:
    """Record ``episodes_per_task`` expert episodes of each task under ``root``; return their paths.

    Episode ``i`` of task ``t`` uses seed :func:`~teamvla_data.sim.seeds.episode_seed`
    ``(seed, t, i)`` and is written to ``root/t/t-00000i.npz``. ``workers > 1``
    records in that many spawned processes; the files are identical either way.
    ``image_size`` and ``num_joints`` override the tasks' world settings when
    given, ``image_codec`` (``"lossless"``, ``"video"`` or ``"none"``: plain arrays)
    and ``video_crf`` their ``storage`` settings (how the camera fields are stored,
    see docs/storage.md). Failed expert episodes (rare) are kept, with ``success`` false.
    """
    from tqdm import tqdm

    tasks = list(dict.fromkeys(tasks))
    for t in tasks:
        check_task(t)
    if episodes_per_task < 0 or seed < 0 or workers < 1:
        raise ValueError(
            f"need episodes_per_task >= 0, seed >= 0, workers >= 1; received {episodes_per_task}, {seed}, {workers}"
        )
    cfg_dicts = {}
    for t in tasks:
        cfg = (task_cfgs or {}).get(t) or default_task_config(t)
        world = cfg.world
        if image_size is not None:
            world = replace(world, image_size=image_size)
        if num_joints is not None:
            world = replace(world, num_joints=num_joints)
        storage = to_dict(cfg.storage)
        if image_codec is not None:
            storage["image_codec"] = None if image_codec == "none" else image_codec
        if video_crf is not None:
            storage["video_crf"] = video_crf
        # from_dict checks the overrides as it checks a config file (codec names, crf range).
        checked = from_dict(StorageConfig, storage, key="task.storage")
        resolved = replace(cfg, world=world, storage=checked).resolved()
        # A bad codec choice or a missing PyAV fails here, not in every worker process.
        _writer(str(root), resolved, overwrite)
        cfg_dicts[t] = to_dict(resolved)
    Path(root).mkdir(parents=True, exist_ok=True)
    jobs = [(t, i) for t in tasks for i in range(episodes_per_task)]
    results: dict[tuple[str, int], str] = {}
    workers = max(1, min(workers, len(jobs)))
    start = time.perf_counter()
    with tqdm(
        total=len(jobs), desc="synth", unit="ep", disable=not progress, dynamic_ncols=True
    ) as bar:
        if workers == 1:
            _init_worker(str(root), cfg_dicts, seed, overwrite)
            try:
                for job in jobs:
                    results[job] = _record_job(job)[0]
                    bar.update()
            finally:
                _WORKER.clear()
        else:
            for job, path in zip(jobs, _record_in_processes(jobs, workers, cfg_dicts, str(root), seed, overwrite), strict=True):  # fmt: skip
                results[job] = path
                bar.update()
    elapsed = time.perf_counter() - start
    if progress and jobs:
        tqdm.write(
            f"recorded {len(jobs)} episode(s) in {elapsed:.1f} s ({len(jobs) / elapsed:.1f} episodes/s)"
        )
    return [Path(results[job]) for job in jobs]
