"""DAgger's episode writers take dagger.image_codec / dagger.video_crf: demos and iterations encoded."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("av")  # teamvla-schema[video]; the dev group has it

from teamvla_data.sim import WorldConfig
from teamvla_schema import find_episodes, read_episode, read_episode_meta
from teamvla_schema.config import load_config
from teamvla_train.algo_config import DaggerConfig
from teamvla_train.algos.dagger_collect import collect_iteration
from teamvla_train.config import resolve_train_config
from teamvla_train.engine.resume import resume_config_changes
from test_dagger import StillPolicy, _tiny_dagger_config
from train_testlib import REPO


def _codecs(root: Path) -> dict[str, set[str]]:
    """``{file name: codecs of its encoded fields}`` of every episode under ``root``."""
    return {
        p.name: {e.codec for e in read_episode_meta(p).encodings.values()}
        for p in find_episodes(root)
    }


def test_dagger_storage_keys_default_to_plain_arrays() -> None:
    assert (DaggerConfig().image_codec, DaggerConfig().video_crf) == (None, 30)
    cfg = resolve_train_config(load_config(REPO / "configs" / "train_dagger.yaml"))
    assert (cfg.dagger.image_codec, cfg.dagger.video_crf) == (None, 30)
    cfg = resolve_train_config(
        load_config(
            REPO / "configs" / "train_dagger.yaml",
            ["dagger.image_codec=video", "dagger.video_crf=20"],
        )
    )
    assert (cfg.dagger.image_codec, cfg.dagger.video_crf) == ("video", 20)
    bad = load_config(REPO / "configs" / "train_dagger.yaml", ["dagger.image_codec=png"])
    with pytest.raises(ValueError, match="image_codec"):
        resolve_train_config(bad)


def test_a_checkpoint_from_before_the_storage_keys_still_resumes() -> None:
    """A DAgger checkpoint whose config has no dagger.image_codec: defaults fill it, no change."""
    now = resolve_train_config(load_config(REPO / "configs" / "train_dagger.yaml")).resolved
    saved = {k: dict(v) if isinstance(v, dict) else v for k, v in now.items()}
    del saved["dagger"]["image_codec"], saved["dagger"]["video_crf"]
    assert resume_config_changes(saved, now) == []
    changed = {**now, "dagger": {**now["dagger"], "image_codec": "lossless"}}
    assert resume_config_changes(saved, changed) == [("dagger.image_codec", None, "lossless")]


def test_collect_iteration_writes_encoded_episodes(tmp_path: Path) -> None:
    world = WorldConfig(image_size=16)
    kwargs: dict[str, Any] = dict(
        tasks=["lift"], episodes_per_task=1, iteration=0, beta=1.0, world=world,
        batch_envs=1, label_every=20, label_steps=4,
    )  # fmt: skip
    plain = collect_iteration(StillPolicy(), root=tmp_path / "plain", **kwargs)
    coded = collect_iteration(
        StillPolicy(), root=tmp_path / "coded", image_codec="lossless", **kwargs
    )
    assert plain.episodes == coded.episodes > 0
    assert set(map(frozenset, _codecs(tmp_path / "plain").values())) == {frozenset()}
    assert set(map(frozenset, _codecs(tmp_path / "coded").values())) == {frozenset({"lossless"})}
    # Same steps, bit-exact pixels.
    for a, b in zip(
        find_episodes(tmp_path / "plain"), find_episodes(tmp_path / "coded"), strict=True
    ):
        ea, eb = read_episode(a), read_episode(b)
        assert ea.arrays.keys() == eb.arrays.keys()
        for k in ea.arrays:
            np.testing.assert_array_equal(ea.arrays[k], eb.arrays[k], err_msg=k)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_dagger_with_lossless_codec_encodes_demos_and_iterations(tmp_path: Path) -> None:
    from teamvla_train.engine import train

    cfg = resolve_train_config(
        load_config(
            _tiny_dagger_config(tmp_path),
            [
                "dagger.image_codec=lossless",
                "dagger.tasks=[lift]",
                "dagger.iterations=1",
                "dagger.eval_episodes_per_task=0",
            ],
        )
    )
    run = tmp_path / "run"
    train(cfg, run_dir=run, progress=False)
    demos = _codecs(run / "dagger" / "demos")
    iteration = _codecs(run / "dagger" / "iter_000")
    assert len(demos) == 2 and iteration
    assert all(c == {"lossless"} for c in [*demos.values(), *iteration.values()])
    for p in find_episodes(run / "dagger" / "demos"):
        assert set(read_episode_meta(p).encodings) == {"rgb_a", "rgb_b"}
