"""DAgger (Ross, Gordon and Bagnell, 2011) with the scripted experts as the corrective oracle.

The whole algorithm, top to bottom (config: the ``dagger:`` section,
:class:`teamvla_train.algo_config.DaggerConfig`):

    demos      record dagger.demos_per_task expert episodes per task into <run>/dagger/demos
    train      behaviour cloning (teamvla_train.algos.bc) on the demos for dagger.initial_steps
    repeat dagger.iterations times, iteration i:
      measure  the policy alone on held-out seeds (dagger.eval_episodes_per_task)
      collect  dagger.episodes_per_iteration episodes per task, executing the expert's action
               with probability beta_i (dagger.beta schedule) and the policy's otherwise;
               every dagger.label_every-th visited state is labelled with the expert's own
               continuation from it (Expert.act from the true world state, on a copy of the
               world, for dagger.label_steps steps), written as ordinary episodes to
               <run>/dagger/iter_<i>;
               dagger.label_rollouts: failed labels only the rollouts that end without success
      aggregate the dataset becomes demos + every iteration so far (normalised with the
               demos' statistics, dagger.stats: demos; or recomputed, dagger.stats: aggregate)
      train    behaviour cloning on the aggregate for dagger.steps_per_iteration steps
    measure    the final policy

Each update is a BC update; DAgger only decides what data BC sees. Its state
in a checkpoint is the number of iterations collected. Killed at any point,
the run resumes from its last checkpoint: an iteration whose collection had
not finished (no ``.complete`` marker) is collected again with the same weights
and seeds, so the data is the same.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from teamvla_data.stats import NormalizationStats
from teamvla_schema import SchemaError
from teamvla_schema.atomic import atomic_write_text

from teamvla_train.algos.base import Context, StepOutput
from teamvla_train.algos.bc import BehaviourCloning
from teamvla_train.algos.dagger_collect import beta_at, collect_iteration, is_complete
from teamvla_train.data import TrainData
from teamvla_train.models import BimanualPolicy

DEMOS = "demos"


class DAgger:
    """DAgger on the engine (see the module docstring)."""

    name = "dagger"

    def __init__(self, ctx: Context, *, data: TrainData | None = None) -> None:
        if ctx.dist_info.enabled:
            raise SchemaError(
                "trainer.algo dagger runs in one process (its rollouts are sequential): launch it "
                "without torchrun"
            )
        if data is not None:
            raise SchemaError(
                "trainer.algo dagger records its own data; it takes no data= argument"
            )
        self.ctx = ctx
        self.d = d = ctx.cfg.dagger
        self.root = ctx.run_dir / "dagger"
        self._total = d.initial_steps + d.iterations * d.steps_per_iteration
        self.boundaries = [d.initial_steps + i * d.steps_per_iteration for i in range(d.iterations)]
        self._record_demos()
        self.iteration = 0  # iterations whose data the policy trains on
        self.step = 0
        self.bc = BehaviourCloning(self._bc_context(0))
        # The demos' statistics, kept while the aggregate grows (dagger.stats: demos): recomputing
        # them moves every normalised target the network has learnt at each aggregation.
        stats = self.bc.data.stats
        self.demo_stats = NormalizationStats.from_dict(stats) if stats is not None else None
        self.tasks = list(d.tasks)
        self.history: list[dict[str, Any]] = []  # one record per measurement

    # ------------------------------------------------------------------ data
    def _world(self) -> Any:
        from teamvla_data.sim import WorldConfig

        world = WorldConfig(num_joints=self.ctx.cfg.model.num_joints)
        if self.d.image_size is not None:
            world = dataclasses.replace(world, image_size=self.d.image_size)
        return world

    def _record_demos(self) -> None:
        from teamvla_data.sim import generate_dataset

        demos = self.root / DEMOS
        if is_complete(demos):
            return
        world = self._world()
        generate_dataset(
            demos,
            tasks=self.d.tasks,
            episodes_per_task=self.d.demos_per_task,
            seed=self.d.seed,
            workers=1,
            image_size=world.image_size,
            num_joints=world.num_joints,
            overwrite=True,
            progress=False,
            # dagger.image_codec: how the camera fields are stored ("none": plain arrays).
            image_codec=self.d.image_codec or "none",
            video_crf=self.d.video_crf,
        )
        atomic_write_text(demos / ".complete", '{"demos": true}\n')

    def iteration_root(self, i: int) -> Path:
        """Where iteration ``i``'s labelled episodes go."""
        return self.root / f"iter_{i:03d}"

    def _bc_context(self, iterations: int) -> Context:
        """The run's context with BC's data = demos + the first ``iterations`` iterations."""
        cfg = self.ctx.cfg
        roots = [str(self.root / DEMOS), *(str(self.iteration_root(i)) for i in range(iterations))]
        dataset = dataclasses.replace(
            cfg.dataset,
            roots=roots,
            tasks=list(self.d.tasks),
            cache_dir=str(self._cache_dir(iterations)),
        )
        trainer = dataclasses.replace(cfg.trainer, max_steps=self._total, epochs=0)
        return dataclasses.replace(
            self.ctx, cfg=dataclasses.replace(cfg, dataset=dataset, trainer=trainer)
        )

    def _cache_dir(self, iterations: int) -> Path:
        """Where the loader caches the aggregate of ``iterations`` iterations (one per aggregate)."""
        base = self.ctx.cfg.dataset.cache_dir
        return (Path(base) if base else self.root / "cache") / f"aggregate_{iterations:03d}"

    def _aggregate(self, iterations: int) -> None:
        """Re-open BC's data over demos + ``iterations`` iterations; keep network and optimiser.

        The previous aggregate's loader cache is deleted once the new one is open: each holds
        a copy of every image, so keeping them all would grow with the square of the iterations.
        """
        previous = self._cache_dir(self.iteration)
        keep = self.d.stats == "demos"
        self.bc.set_data(self._bc_context(iterations), stats=self.demo_stats if keep else None)
        if previous != self._cache_dir(iterations):
            shutil.rmtree(previous, ignore_errors=True)
        self.iteration = iterations

    # ------------------------------------------------------------------ measuring
    def _policy(self) -> Any:
        from teamvla_train.policy import Policy

        bc = self.bc
        return Policy(
            model=bc.model,
            normalization=bc.data.normalization,
            image_size=bc.data.image_size,
            device=self.ctx.device,
            config={"eval": {"replan_every": self.ctx.cfg.eval.replan_every}},
        )

    def measure(self) -> dict[str, float]:
        """Closed-loop success of the policy alone per task, on held-out evaluation seeds."""
        from teamvla_data.sim import BimanualEnv
        from teamvla_data.sim.seeds import eval_seeds

        from teamvla_train.rollout import EpisodeSpec, run_rollouts

        n = self.d.eval_episodes_per_task
        if not n:
            return {}
        world = self._world()
        policy = self._policy()
        out = {}
        for task in self.d.tasks:
            specs = [EpisodeSpec(task, s) for s in eval_seeds(task, n)]
            results = run_rollouts(
                policy,
                lambda: BimanualEnv(world),
                specs,
                batch_envs=self.d.batch_envs,
                replan_every=self.ctx.cfg.eval.replan_every,
            )
            out[task] = float(np.mean([r.success for r in results]))
        self.bc.model.train()
        return out

    def _next_iteration(self) -> dict[str, Any]:
        """Measure, collect iteration ``self.iteration``, aggregate; the metrics record."""
        i = self.iteration
        t0 = time.perf_counter()
        success = self.measure()
        beta = beta_at(i, schedule=self.d.beta, beta0=self.d.beta0, rampdown=self.d.beta_rampdown)
        stats = collect_iteration(
            self._policy(),
            root=self.iteration_root(i),
            tasks=self.d.tasks,
            episodes_per_task=self.d.episodes_per_iteration,
            iteration=i,
            beta=beta,
            base_seed=self.d.seed,
            world=self._world(),
            batch_envs=self.d.batch_envs,
            replan_every=self.ctx.cfg.eval.replan_every,
            label_every=self.d.label_every,
            label_steps=self.d.label_steps or self.ctx.cfg.dataset.action_horizon,
            label_rollouts=self.d.label_rollouts,
            label_gate=self.d.label_gate,
            image_codec=self.d.image_codec,
            video_crf=self.d.video_crf,
        )
        self.bc.model.train()
        self._aggregate(i + 1)
        record = {
            "event": "dagger_iteration",
            "iteration": i,
            "beta": beta,
            "episodes": stats.episodes,
            "labelled_steps": stats.steps,
            "labelled_rollouts": stats.labelled_rollouts,
            "rollout_steps": stats.rollout_steps,
            # Every action the expert gave: stored labels, executed rollout steps, gate queries.
            "expert_actions": stats.expert_actions,
            "gate_queries": stats.gate_queries,
            "intervention_rate": stats.intervention_rate,
            "dataset_samples": self.bc.data.num_train_batches * self.ctx.cfg.dataset.batch_size,
            "seconds": time.perf_counter() - t0,
            **{f"success_{t}": v for t, v in success.items()},
            **{f"mixed_success_{t}": v for t, v in stats.success.items()},
        }
        self.history.append(record)
        return record

    # ------------------------------------------------------------------ the engine's interface
    def total_steps(self) -> int:
        """``initial_steps + iterations * steps_per_iteration``."""
        return self._total

    @property
    def epoch(self) -> int:
        """Iterations of data collected (names checkpoints)."""
        return self.iteration

    def train(self, mode: bool = True) -> None:
        """Training (or evaluation) mode of the policy."""
        self.bc.train(mode)

    def lr(self) -> float:
        """Learning rate of the last step."""
        return self.bc.lr()

    def policy_network(self) -> BimanualPolicy:
        """The policy being trained."""
        return self.bc.model

    def train_step(self) -> StepOutput:
        """Collect the next iteration when its step has come, then one BC update on the aggregate."""
        events = []
        if self.iteration < len(self.boundaries) and self.step >= self.boundaries[self.iteration]:
            events.append(self._next_iteration())
        out = self.bc.train_step()
        self.step += 1
        out.events.extend(events)
        out.checkpoint = bool(
            events
        )  # right after new data arrived: a resume will not collect it again
        if self.step == self._total and self.d.eval_episodes_per_task:
            success = self.measure()
            final = {"event": "dagger_final", "iteration": self.iteration}
            final.update({f"success_{t}": v for t, v in success.items()})
            self.history.append(final)
            out.events.append(final)
            from teamvla_train.plots import plot_dagger_iterations

            plot_dagger_iterations(self.history, self.root / "iterations.png")
        return out

    def validate(self) -> dict[str, float]:
        """BC loss on the aggregate's validation split."""
        return self.bc.validate()

    def checkpoint_state(self) -> dict[str, Any]:
        """BC's state plus the number of iterations collected."""
        state = self.bc.checkpoint_state()
        state["training_state"]["dagger"] = {"iteration": self.iteration, "step": self.step}
        state["extra"]["dagger_history"] = self.history
        return state

    def load_checkpoint_state(
        self,
        ckpt: Mapping[str, Any],
        *,
        path: Path,
        force: bool,
        changes: Sequence[tuple[str, Any, Any]] = (),
    ) -> None:
        """Re-open the data the checkpoint trained on, then BC's state."""
        mine = ckpt["training_state"].get("dagger") or {}
        iteration = int(mine.get("iteration", 0))
        missing = [i for i in range(iteration) if not is_complete(self.iteration_root(i))]
        if missing:
            raise SchemaError(
                f"cannot resume: the checkpoint trained on DAgger iteration(s) {missing}, whose data "
                f"is missing under {self.root}; start fresh in a new run directory (--out DIR)",
                path=path,
            )
        if iteration != self.iteration:
            self._aggregate(iteration)
        self.bc.load_checkpoint_state(ckpt, path=path, force=force, changes=changes)
        self.step = int(mine.get("step", ckpt["training_state"]["step"]))
        self.history = list((ckpt.get("extra") or {}).get("dagger_history") or [])

    def close(self) -> None:
        """Release BC's loaders."""
        self.bc.close()
