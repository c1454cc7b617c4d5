"""Training algorithms, built by name (``trainer.algo``) for the engine.

* ``bc``: behaviour cloning (:mod:`teamvla_train.algos.bc`).
* ``dagger``: DAgger with the scripted experts as the oracle (:mod:`teamvla_train.algos.dagger`).
* ``sac``: soft actor-critic with demonstration-seeded replay (:mod:`teamvla_train.algos.sac`).
* ``awac``: advantage-weighted actor-critic, offline on demonstrations then online
  (:mod:`teamvla_train.algos.awac`).

Each module reads top to bottom as one algorithm: its config, its update
rule, its state. The engine (:mod:`teamvla_train.engine`) drives any of them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from teamvla_train.algos.base import Algorithm, Context

ALGORITHMS = ("bc", "dagger", "sac", "awac")


def make_algorithm(name: str, ctx: Context, **kwargs: Any) -> Algorithm:
    """The algorithm ``name`` built for the run described by ``ctx``."""
    if name == "bc":
        from teamvla_train.algos.bc import BehaviourCloning

        return BehaviourCloning(ctx, **kwargs)
    if name == "dagger":
        from teamvla_train.algos.dagger import DAgger

        return DAgger(ctx, **kwargs)
    if name == "sac":
        from teamvla_train.algos.sac import SoftActorCritic

        return SoftActorCritic(ctx, **kwargs)
    if name == "awac":
        from teamvla_train.algos.awac import AdvantageWeightedActorCritic

        return AdvantageWeightedActorCritic(ctx, **kwargs)
    raise ValueError(f"unknown algorithm {name!r}; algorithms are {', '.join(ALGORITHMS)}")
