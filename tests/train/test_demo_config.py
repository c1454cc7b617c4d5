"""The demo config: the copy shipped in the package agrees with configs/, and it validates."""

from __future__ import annotations

from pathlib import Path

import pytest
from teamvla_schema.config import load_config
from teamvla_train.config import resolve_train_config
from teamvla_train.demo import QUICK_OVERRIDES, default_config_path, demo_config

REPO = Path(__file__).resolve().parents[2]
PACKAGED = default_config_path().parent
# demo.yaml extends train_bc.yaml, which extends common.yaml: the package ships the chain.
CHAIN = ("demo.yaml", "train_bc.yaml", "common.yaml")


@pytest.mark.parametrize("name", CHAIN)
def test_packaged_config_is_the_repository_copy(name):
    repo, packaged = REPO / "configs" / name, PACKAGED / name
    assert packaged.is_file(), f"{packaged} is missing"
    assert packaged.read_text(encoding="utf-8") == repo.read_text(encoding="utf-8"), (
        f"{packaged} differs from configs/{name}: copy configs/{name} over it"
    )


def test_packaged_and_repository_demo_resolve_alike():
    assert (
        load_config(default_config_path()).data == load_config(REPO / "configs" / "demo.yaml").data
    )


@pytest.mark.parametrize("quick", [False, True])
@pytest.mark.parametrize("model", [None, "single_brain"])
def test_demo_config_validates(quick, model):
    loaded = demo_config(model=model, quick=quick, overrides=["dataset.roots=[somewhere]"])
    cfg = resolve_train_config(loaded)
    assert cfg.model.name == (model or "msg_passing")  # the demo default
    assert cfg.dataset.num_workers == 0
    if quick:
        assert cfg.trainer.max_steps <= 50 and cfg.eval.episodes_per_task <= 3
    else:
        assert cfg.eval.episodes_per_task >= 20 and cfg.eval.tasks == ["lift", "handoff", "drawer"]


def test_quick_overrides_only_touch_known_sections():
    sections = {o.split(".", 1)[0] for o in QUICK_OVERRIDES}
    assert sections <= {"dataset", "model", "trainer", "scheduler", "eval", "dagger"}
