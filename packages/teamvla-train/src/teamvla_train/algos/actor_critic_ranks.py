"""SAC and AWAC under ``torchrun``: what each rank owns, how the networks stay one, per-rank state.

Every rank (process) steps its own ``env.num_envs`` worlds, keeps its own
online replay, its own copy of the demo buffer and its own random streams; the
networks, optimisers, temperature and target critics are one, identical on
every rank. A world size of 1 runs none of this (the one-process run is
unchanged, bit for bit).

**Seeds.** Rank ``r`` draws warm-up actions, batches and shifts from
:func:`rank_generator` (rank 0: the generator one process always used), and its
worlds start from scene-seed indices ``env_steps + r * env.num_envs + i``
(:class:`teamvla_train.algos.online.OnlineWorlds`, ``world_offset``): no two
ranks ever play the same scene. The engine seeds torch with ``run.seed + r``.

**Gradients.** :func:`sync_optimizer_steps` registers a step pre-hook on each
optimiser (``actor``, ``critic``, ``alpha``) that averages, across ranks, the
gradients of exactly that optimiser's parameters (one flattened all-reduce per
step) before it steps. The update rules stay as they are: the actor's loss
reaches the critics' parameters and the temperature's loss only ``log_alpha``,
but each optimiser averages only what it steps. DDP wrappers were not used:
they assume one forward and one backward per module and iteration, whereas an
update calls the critic for its own loss, again for the actor's loss (whose
gradient in the critic is discarded) and, for AWAC, under ``no_grad`` for the
advantages, and the shared pixel encoder is called outside the critic's
``forward``; that needs ``find_unused_parameters`` and static-graph workarounds
and would all-reduce the discarded critic gradients of the actor's loss. Rank
0's initial weights are broadcast once (:func:`broadcast_tensors`), so with
identical averaged gradients every rank's Adam takes identical steps and the
Polyak targets follow identically.

**Per-rank state in checkpoints.** Rank 0 writes the checkpoint as one process
does (its replay, generator and episode statistics in
``training_state[<algo>]``, its RNGs in the engine's ``training_state.rng``).
Every other rank writes, just before each checkpoint step ends, its own part
to ``<checkpoint dir>/ranks/rank_<r>_step_<step>.state`` (:class:`RankFiles`;
an ordinary teamvla checkpoint file, atomic, no pickle): replay, generator,
episode statistics, its Python/numpy/torch RNG states and a digest of its
networks. Then all ranks compare network digests (:func:`assert_in_sync`),
which also holds rank 0 back until every side file is complete. A resumed rank
``r`` reads the file of the checkpoint's step and restores its RNG states
at its first step (after the engine's own reseeding). Side files of
checkpoints that keep-last-K deleted are deleted by their rank.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from teamvla_schema import SchemaError, load_checkpoint, save_checkpoint
from teamvla_schema.atomic import is_temporary
from teamvla_schema.checkpoint import to_numpy

from teamvla_train.engine.checkpointing import checkpoint_files
from teamvla_train.engine.distributed import DistInfo, all_reduce_sum, broadcast_
from teamvla_train.engine.rng import capture_rng_state, restore_rng_state

#: Directory (next to the checkpoints) of the other ranks' state files.
RANKS_DIR = "ranks"
_STEP = re.compile(r"_step_(?P<step>\d{8,})")
_SIDE = re.compile(r"rank_(?P<rank>\d{3,})_step_(?P<step>\d{8,})\.state")


def rank_generator(seed: int, rank: int) -> np.random.Generator:
    """Rank ``rank``'s generator of warm-up actions, batches and shifts (rank 0: one process's)."""
    return np.random.default_rng([seed, 5417] if rank == 0 else [seed, 5417, rank])


def average_gradients(params: Iterable[torch.Tensor], info: DistInfo) -> None:
    """Replace each gradient by its mean over ranks (one flattened all-reduce; parameters without
    a gradient, the same on every rank, are skipped)."""
    grads = [p.grad for p in params if p.grad is not None]
    if not info.enabled or not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])  # (P,)
    all_reduce_sum(flat, info).div_(info.world_size)
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()


def sync_optimizer_steps(optimizers: Mapping[str, torch.optim.Optimizer], info: DistInfo) -> None:
    """Average each optimiser's gradients over ranks right before it steps (a step pre-hook)."""
    for opt in optimizers.values():
        params = [p for group in opt.param_groups for p in group["params"]]

        def hook(_opt: Any, _args: Any, _kwargs: Any, params: list[torch.Tensor] = params) -> None:
            average_gradients(params, info)

        opt.register_step_pre_hook(hook)


def broadcast_tensors(tensors: Iterable[torch.Tensor], info: DistInfo) -> None:
    """Give every rank rank 0's values of ``tensors`` (parameters, buffers, ``log_alpha``)."""
    if not info.enabled:
        return
    with torch.no_grad():
        for t in tensors:
            broadcast_(t.detach(), info)


def network_digest(sections: Mapping[str, Mapping[str, Any]]) -> str:
    """SHA-256 of named state dicts (tensors or the arrays a checkpoint holds), in sorted order:
    equal on two ranks iff their networks are bit-identical."""
    h = hashlib.sha256()
    for name in sorted(sections):
        for key in sorted(sections[name]):
            arr = np.ascontiguousarray(to_numpy(sections[name][key]))
            h.update(f"{name}/{key}:{arr.dtype.str}:{arr.shape};".encode())
            h.update(arr.tobytes())
    return h.hexdigest()


def assert_in_sync(
    digest: str, info: DistInfo, *, step: int, device: torch.device | None = None
) -> None:
    """Raise on every rank if any rank's :func:`network_digest` differs from rank 0's (a collective;
    ``device``: where the process group's backend takes tensors, CUDA for NCCL)."""
    if not info.enabled:
        return
    mine = torch.tensor([int(digest[:15], 16)], dtype=torch.int64, device=device)
    reference = broadcast_(mine.clone(), info)
    differ = all_reduce_sum((mine != reference).to(torch.int64), info)
    if int(differ.item()):
        raise RuntimeError(
            f"step {step}: the networks of {int(differ.item())} rank(s) differ from rank 0's "
            "(gradient averaging broken?); the checkpoint would not describe them"
        )


def checkpoint_due(step: int, *, total: int, ckpt_every: int) -> bool:
    """Whether the engine writes a checkpoint after engine step ``step`` (its cadence:
    every ``trainer.ckpt_every`` steps, and after the last one)."""
    return bool(ckpt_every and step % ckpt_every == 0) or step == total


class RankFiles:
    """Rank ``r``'s (``r >= 1``) side files in ``<checkpoint dir>/ranks`` (see the module docstring)."""

    def __init__(self, ckpt_dir: Path, info: DistInfo, algo: str) -> None:
        self.ckpt_dir, self.info, self.algo = ckpt_dir, info, algo

    @staticmethod
    def path(ckpt_dir: Path, rank: int, step: int) -> Path:
        """Rank ``rank``'s state at engine step ``step`` beside the checkpoints of ``ckpt_dir``."""
        return ckpt_dir / RANKS_DIR / f"rank_{rank:03d}_step_{step:08d}.state"

    def write(self, step: int, state: Mapping[str, Any]) -> Path:
        """Write this rank's state at ``step`` atomically (a teamvla checkpoint file, no pickle)."""
        extra = {"kind": "rank state", "algo": self.algo, "rank": self.info.rank,
                 "world_size": self.info.world_size, "step": step}  # fmt: skip
        return save_checkpoint(self.path(self.ckpt_dir, self.info.rank, step), model={},
                               training_state={self.algo: dict(state)}, extra=extra)  # fmt: skip

    def read(self, checkpoint: Path, step: int) -> dict[str, Any]:
        """This rank's state saved with ``checkpoint`` (at engine step ``step``); SchemaError if absent."""
        path = self.path(checkpoint.parent, self.info.rank, step)
        if not path.is_file():
            raise SchemaError(
                f"cannot resume rank {self.info.rank}: its state file {path.name} for step {step} "
                f"is missing (every rank but 0 writes one beside each checkpoint, in {RANKS_DIR}/)",
                path=checkpoint,
            )  # fmt: skip
        state = (load_checkpoint(path).get("training_state") or {}).get(self.algo)
        if not isinstance(state, Mapping) or int(state.get("step", -1)) != step:
            raise SchemaError(f"not rank {self.info.rank}'s {self.algo} state of step {step}", path=path)  # fmt: skip
        return dict(state)

    def prune(self, keep: int) -> None:
        """Delete this rank's files of checkpoints that are gone (older than the newest checkpoint
        and not among the checkpoints present; ``keep`` is never deleted), and its unfinished
        writes of processes that no longer run."""
        folder = self.ckpt_dir / RANKS_DIR
        if not folder.is_dir():
            return
        steps = {int(m["step"]) for p in checkpoint_files(self.ckpt_dir) if (m := _STEP.search(p.name))}  # fmt: skip
        newest = max(steps, default=-1)
        mine = f"rank_{self.info.rank:03d}_"
        for p in folder.iterdir():
            if is_temporary(p) and p.name.startswith("." + mine):
                pid = p.name[:-4].rsplit(".", 1)[-1].split("-")[0]
                if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
                    p.unlink(missing_ok=True)
                continue
            m = _SIDE.fullmatch(p.name)
            if m is None or int(m["rank"]) != self.info.rank:
                continue
            step = int(m["step"])
            if step != keep and step < newest and step not in steps:
                p.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True


class RankSync:
    """This rank's part of a distributed actor-critic run (see the module docstring): built once
    the networks exist, it broadcasts rank 0's values, hooks the optimisers and owns the side files."""

    def __init__(
        self, *, info: DistInfo, algo: str, ckpt_dir: Path, tensors: Iterable[torch.Tensor],
        optimizers: Mapping[str, torch.optim.Optimizer], device: torch.device,
    ) -> None:  # fmt: skip
        self.info, self.files, self.device = info, RankFiles(ckpt_dir, info, algo), device
        broadcast_tensors(tensors, info)
        sync_optimizer_steps(optimizers, info)
        self.pending_rng: Mapping[str, Any] | None = None  # restored at the first step

    def begin_step(self) -> None:
        """A resumed rank > 0 takes back its RNG states (the engine restored rank 0's and reseeded
        the others after the algorithm loaded)."""
        if self.pending_rng is not None:
            restore_rng_state(self.pending_rng)
            self.pending_rng = None

    def end_step(self, algo: Any, *, checkpoint: bool) -> None:
        """After an engine step of ``algo`` (an ``ActorCriticBase``); before a ``checkpoint``:
        ranks > 0 write :func:`rank_state`, then every rank checks its networks against rank 0's
        (which also holds rank 0 back until every side file is complete)."""
        if not checkpoint:
            return
        digest, step = algo_digest(algo), algo.engine_step
        if self.info.rank:
            self.files.write(step, {**rank_state(algo), "networks_sha256": digest,
                                    "global_rng": capture_rng_state()})  # fmt: skip
        assert_in_sync(digest, self.info, step=step, device=self.device)
        if self.info.rank:
            self.files.prune(keep=step)

    def own_state(self, mine: dict[str, Any], checkpoint: Path, step: int) -> dict[str, Any]:
        """The per-rank part to resume from: rank 0's is the checkpoint's own ``mine``; another
        rank's comes from its side file (its RNG states then wait for :meth:`begin_step`)."""
        if not self.info.rank:
            return mine
        own = self.files.read(checkpoint, step)
        self.pending_rng = own["global_rng"]
        self.files.prune(keep=step)  # what the last keep-last deletion of the earlier run left
        return own


def algo_digest(algo: Any) -> str:
    """:func:`network_digest` of an ``ActorCriticBase``'s actor, critics and temperature, named as
    its checkpoint names them (``model`` is the actor; the others are in ``training_state``)."""
    return network_digest({"actor": algo.actor.state_dict(), "critic": algo.critic.state_dict(),
                           "target_critic": algo.target_critic.state_dict(),
                           "log_alpha": {"log_alpha": algo.log_alpha}})  # fmt: skip


def rank_state(algo: Any) -> dict[str, Any]:
    """What a rank > 0 of an ``ActorCriticBase`` saves beside a checkpoint: its replay, generator
    and episode statistics (the networks and counters are rank 0's, in the checkpoint)."""
    from teamvla_train.algos.online import rng_state

    if algo.worlds.recorder is not None:
        algo.worlds.recorder.index()
    return {"step": algo.engine_step, "rank": algo.dist.rank, "world_size": algo.dist.world_size,
            "env_steps": algo.env_steps, "updates": algo.updates, "replay": algo.replay.state_dict(),
            "rng": rng_state(algo.rng), **algo.worlds.state_dict()}  # fmt: skip
