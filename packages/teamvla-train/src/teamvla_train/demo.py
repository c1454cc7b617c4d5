"""``teamvla demo``: the whole pipeline on one machine, CPU by default, in about ten minutes.

With ``--algo dagger`` DAgger (the config's ``dagger:`` section) replaces
steps 1 and 2: it records its own demonstrations and expert-labelled
rollouts inside ``OUT/runs/dagger-<model>``; pictures go to ``OUT/pictures/dagger-<model>``.

1. **Record** a dataset with the scripted experts into ``OUT/data`` unless it
   already holds episodes (``eval.demo_episodes_per_task`` per task, recorded
   at the model's image size with ``eval.demo_workers`` processes, camera
   fields stored as ``eval.demo_image_codec`` says; episodes already there are
   reused as they are stored, and the demo says how).
2. **Train** the default model (``--model`` picks the other) into
   ``OUT/runs/<model>`` (an interrupted demo resumes there; a finished one is
   not retrained).
3. **Evaluate** it in closed loop on held-out seeds, with the language swap,
   and print the per-task success table.

Everything lands under ``OUT`` (default ``./teamvla-demo``): data, run
(checkpoints, ``metrics.jsonl``, ``config.yaml``), ``pictures/`` (rollout GIF
and PNG strip per task, training curves), ``eval.json`` (full evaluation) and
``results.json`` (success rate per task and the number of evaluation episodes).

The settings come from ``demo.yaml`` shipped in ``teamvla_train/default_configs``
(the same file as the repository's ``configs/demo.yaml``), so the demo also
works outside a checkout. ``--quick`` shrinks everything (:data:`QUICK_OVERRIDES`)
for tests and a first look.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from teamvla_schema.config import LoadedConfig, load_config

from teamvla_train.demo_data import describe_storage, record_if_missing

log = logging.getLogger(__name__)

DEFAULT_OUT = "teamvla-demo"
DEMO_CONFIG = "demo.yaml"
RESULTS_FILE = "results.json"

#: What ``--quick`` changes: a tiny dataset, model, training and evaluation (about a minute on 2 cores).
QUICK_OVERRIDES: tuple[str, ...] = (
    "eval.demo_episodes_per_task=3",
    "eval.episodes_per_task=2",
    "eval.max_steps=30",
    "eval.batch_envs=4",
    "eval.offline_batches=1",
    "dataset.val_fraction=0.34",
    "dataset.batch_size=16",
    "dataset.num_workers=0",
    "model.image_size=32",
    "model.conv_channels=[8,16]",
    "model.conv_strides=[2,2]",
    "model.hidden_dim=64",
    "model.msg_dim=32",
    "trainer.max_steps=20",
    "trainer.log_every=5",
    "trainer.val_every=10",
    "trainer.val_batches=2",
    "scheduler.warmup_steps=5",
    "dagger.demos_per_task=3",
    "dagger.image_size=32",
    "dagger.initial_steps=10",
    "dagger.iterations=1",
    "dagger.episodes_per_iteration=2",
    "dagger.steps_per_iteration=10",
    "dagger.eval_episodes_per_task=0",
)


def default_config_path() -> Path:
    """The demo config shipped inside the package (identical to the repository's configs/demo.yaml)."""
    return Path(str(resources.files("teamvla_train") / "default_configs" / DEMO_CONFIG))


def storage_overrides(image_codec: str | None, video_crf: int | None = None) -> list[str]:
    """The config overrides of ``--image-codec`` / ``--video-crf``: the demo's recorded data and DAgger's.

    ``image_codec`` is ``"lossless"``, ``"video"`` or ``"none"`` (plain arrays);
    ``None`` leaves the config's choice.
    """
    out = []
    if image_codec is not None:
        value = "null" if image_codec == "none" else image_codec
        out += [f"eval.demo_image_codec={value}", f"dagger.image_codec={value}"]
    if video_crf is not None:
        out += [f"eval.demo_video_crf={video_crf}", f"dagger.video_crf={video_crf}"]
    return out


def demo_config(
    *,
    config: str | os.PathLike[str] | None = None,
    model: str | None = None,
    quick: bool = False,
    overrides: Sequence[str] = (),
    algo: str | None = None,
    image_codec: str | None = None,
    video_crf: int | None = None,
) -> LoadedConfig:
    """The demo's resolved config: the file, then ``--quick``, ``--model``, ``--algo``,
    ``--image-codec`` / ``--video-crf`` and user overrides."""
    all_overrides = [
        *(QUICK_OVERRIDES if quick else ()),
        *([f"model.name={model}"] if model else []),
        *([f"trainer.algo={algo}"] if algo else []),
        *storage_overrides(image_codec, video_crf),
        *overrides,
    ]
    return load_config(config or default_config_path(), all_overrides)


def _section(loaded: LoadedConfig, name: str) -> dict[str, Any]:
    return loaded.data.setdefault(name, {}) or {}


def _stage(title: str, progress: bool) -> None:
    if progress:
        print(f"\n== {title}", flush=True)


def run_demo(
    *,
    out: str | os.PathLike[str] = DEFAULT_OUT,
    model: str | None = None,
    quick: bool = False,
    device: str | None = None,
    config: str | os.PathLike[str] | None = None,
    overrides: Sequence[str] = (),
    progress: bool = True,
    algo: str | None = None,
    image_codec: str | None = None,
    video_crf: int | None = None,
) -> dict[str, Any]:
    """Record (if needed), train, evaluate; print the table; return what ``results.json`` holds.

    ``algo="dagger"`` trains with DAgger (the demo config's ``dagger:`` section),
    which records its own expert demonstrations inside the run directory.
    ``image_codec`` (``"lossless"``, ``"video"``, ``"none"``) and ``video_crf``
    override how recorded episodes store their camera fields
    (``eval.demo_image_codec`` and ``dagger.image_codec``; see docs/storage.md).
    """
    from teamvla_schema import find_episodes

    from teamvla_train.config import resolve_train_config
    from teamvla_train.engine import train
    from teamvla_train.engine.loggers import log_pictures
    from teamvla_train.eval_report import format_table, plot_run, write_json
    from teamvla_train.evaluation import evaluate_policy
    from teamvla_train.policy import load_policy

    t_start = time.perf_counter()
    out_dir = Path(out).resolve()
    loaded = demo_config(
        config=config,
        model=model,
        quick=quick,
        overrides=overrides,
        algo=algo,
        image_codec=image_codec,
        video_crf=video_crf,
    )
    data_dir = out_dir / "data"
    # The demo owns where things go: everything under OUT, whatever the file says.
    dataset = _section(loaded, "dataset")
    dataset["roots"] = [str(data_dir)]
    dataset["cache_dir"] = None
    _section(loaded, "run")["output_dir"] = str(out_dir / "runs")
    for key in ("dataset.roots", "dataset.cache_dir", "run.output_dir"):
        loaded.sources[key] = "teamvla demo"
    cfg = resolve_train_config(loaded)  # validates everything before any work
    dagger = cfg.trainer.algo == "dagger"
    run_name = ("dagger-" if dagger else "") + cfg.model.name + ("-quick" if quick else "")
    run_dir = out_dir / "runs" / run_name
    if dagger:  # DAgger records its own demonstrations; offline evaluation reads them
        data_dir = run_dir / "dagger" / "demos"
        dataset["roots"] = [str(data_dir)]
        cfg = resolve_train_config(loaded)
    pictures = out_dir / "pictures" / run_name if dagger else out_dir / "pictures"
    tasks = list(cfg.dataset.tasks or cfg.eval.tasks)

    t0 = time.perf_counter()
    if dagger:
        _stage(f"1/3 data: recorded by DAgger itself under {run_dir / 'dagger'}", progress)
        n_episodes, recorded, storage = 0, False, ""
    else:
        _stage(f"1/3 data: {data_dir}", progress)
        n_episodes, recorded, storage = record_if_missing(
            data_dir,
            tasks=tasks,
            episodes_per_task=cfg.eval.demo_episodes_per_task,
            seed=cfg.run.seed,
            workers=cfg.eval.demo_workers,
            image_size=cfg.model.image_size,
            num_joints=cfg.model.num_joints,
            progress=progress,
            image_codec=cfg.eval.demo_image_codec,
            video_crf=cfg.eval.demo_video_crf,
        )
        if progress:
            how = "recorded now" if recorded else "reused as stored, not re-encoded"
            print(f"{n_episodes} episodes ({how}); camera fields: {storage}", flush=True)
    t1 = time.perf_counter()

    length = (
        f"{cfg.dagger.initial_steps + cfg.dagger.iterations * cfg.dagger.steps_per_iteration} steps "
        f"({cfg.dagger.iterations} DAgger iterations)"
        if dagger
        else f"{cfg.trainer.max_steps or cfg.trainer.epochs} "
        f"{'steps' if cfg.trainer.max_steps else 'epochs'}"
    )
    _stage(
        f"2/3 training {cfg.model.name} with {cfg.trainer.algo} for {length} on "
        f"{device or cfg.run.device}: {run_dir}",
        progress,
    )
    result = train(cfg, run_dir=run_dir, device=device, resume="auto", progress=progress)
    if result.last_checkpoint is None:
        raise RuntimeError(f"training in {run_dir} wrote no checkpoint")
    t2 = time.perf_counter()

    _stage(
        f"3/3 closed-loop evaluation: {cfg.eval.episodes_per_task} episodes per task"
        f"{' (+ language swap)' if cfg.eval.language_swap else ''}",
        progress,
    )
    policy = load_policy(result.last_checkpoint, device=device or cfg.run.device)
    evaluation: dict[str, Any] = {"checkpoint": str(result.last_checkpoint)}
    evaluation.update(
        evaluate_policy(
            policy,
            cfg.eval,
            checkpoint_config=policy.config,
            pictures_dir=pictures,
            progress=progress,
        )
    )
    # Rollout pictures to the run's TensorBoard / W&B too (its curves went there when training ended).
    log_pictures(
        run_dir,
        cfg.trainer.loggers,
        evaluation.get("pictures", []),
        step=result.steps,
        config=cfg.resolved,
        strict=False,
    )
    curves = plot_run(run_dir, out=pictures / "training_curves.png")
    evaluation.setdefault("pictures", []).append(str(curves))
    write_json(out_dir / "eval.json", {"version": 1, "results": [evaluation]})
    t3 = time.perf_counter()

    closed = evaluation["closed_loop"]
    if dagger:
        from teamvla_train.engine.metrics import read_events

        events = read_events(run_dir / "metrics.jsonl", "dagger_iteration")
        n_episodes = cfg.dagger.demos_per_task * len(cfg.dagger.tasks) + sum(int(r["episodes"]) for r in events)  # fmt: skip
        storage = describe_storage(find_episodes(run_dir / "dagger"))
    results: dict[str, Any] = {
        "model": cfg.model.name,
        "algo": cfg.trainer.algo,
        "quick": quick,
        "success_rate": {t: c["success_rate"] for t, c in closed.items()},
        "swap_success_rate": {t: c.get("swap_success_rate") for t, c in closed.items()},
        "episodes": {t: c["episodes"] for t, c in closed.items()},
        "episodes_per_task": cfg.eval.episodes_per_task,
        "mean_success_rate": evaluation["mean_success_rate"],
        "checkpoint": str(result.last_checkpoint),
        "run_dir": str(run_dir),
        "data": {
            "root": str(data_dir),
            "episodes": n_episodes,
            "recorded_now": recorded,
            "storage": storage,
        },
        "train": {
            "steps": result.steps,
            **{
                k: v
                for k, v in result.final_metrics.items()
                if k in ("train_loss", "val_loss", "train_data_frac", "train_samples_per_s")
            },
        },
        "offline": {k: v for k, v in (evaluation.get("offline") or {}).items() if k != "per_task"},
        "pictures": evaluation.get("pictures", []),
        "timing_s": {
            "data": round(t1 - t0, 1),
            "train": round(t2 - t1, 1),
            "eval": round(t3 - t2, 1),
            "total": round(t3 - t_start, 1),
        },
    }
    write_json(out_dir / RESULTS_FILE, results)
    print()
    print(format_table([evaluation]))
    print(
        f"\n{sum(results['episodes'].values())} evaluation episodes on held-out seeds; "
        f"total time {results['timing_s']['total']:.0f} s "
        f"(data {results['timing_s']['data']:.0f} s, train {results['timing_s']['train']:.0f} s, "
        f"eval {results['timing_s']['eval']:.0f} s)"
    )
    print(f"data: {n_episodes} episodes, camera fields stored as {storage}")
    print(f"results: {out_dir / RESULTS_FILE}\npictures: {pictures}")
    return results
