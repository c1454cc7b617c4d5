"""Transforms: reproducible per-sample randomness, shift/jitter/resize correctness, float conversion."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from data_testlib import write_many
from teamvla_data import ColorJitter, Compose, ImagesToFloat, MultiTaskDataset, RandomShift, Resize
from teamvla_data import batch as B
from teamvla_data.config import AugmentConfig, DatasetConfig
from teamvla_data.sampler import IndexBatch
from teamvla_data.transforms import sample_uniform
from teamvla_schema import SchemaError


def _gradient_batch(n: int = 6, to: int = 2, h: int = 12, w: int = 10) -> dict:
    y, x = np.mgrid[0:h, 0:w]
    img = (y * 16 + x).astype(np.uint8)[..., None].repeat(3, -1)  # pixel encodes (row, col)
    imgs = np.broadcast_to(img, (n, to, h, w, 3)).copy()
    return {
        B.RGB_A: imgs,
        B.RGB_B: imgs.copy(),
        B.EPISODE_INDEX: np.arange(n, dtype=np.int64) // 2,
        B.FRAME_INDEX: np.arange(n, dtype=np.int64) % 2,
    }


def test_sample_uniform_depends_only_on_sample_seed_epoch_stream() -> None:
    b = _gradient_batch()
    u = sample_uniform(1, 0, b, 0, 3)
    assert u.shape == (6, 3) and (u >= 0).all() and (u < 1).all()
    np.testing.assert_array_equal(u, sample_uniform(1, 0, b, 0, 3))
    # The same sample in another batch position gets the same numbers.
    rev = {k: v[::-1] for k, v in b.items()}
    np.testing.assert_array_equal(sample_uniform(1, 0, rev, 0, 3), u[::-1])
    for other in (
        sample_uniform(2, 0, b, 0, 3),
        sample_uniform(1, 1, b, 0, 3),
        sample_uniform(1, 0, b, 1, 3),
    ):
        assert not np.allclose(other, u)
    assert len(np.unique(u)) == u.size


def test_random_shift_is_a_clamped_translation_shared_by_history_frames() -> None:
    b = _gradient_batch()
    out = RandomShift(3, seed=5)(b, epoch=2)[B.RGB_A]
    assert out.dtype == np.uint8 and out.shape == b[B.RGB_A].shape
    h, w = out.shape[2:4]
    shifts = set()
    for i in range(len(out)):
        pix = out[i, 0, :, :, 0].astype(np.int64)
        rows, cols = pix // 16, pix % 16
        dy, dx = int(rows[h // 2, 0] - h // 2), int(cols[0, w // 2] - w // 2)
        assert -3 <= dy <= 3 and -3 <= dx <= 3
        np.testing.assert_array_equal(rows[:, 0], np.clip(np.arange(h) + dy, 0, h - 1))
        np.testing.assert_array_equal(cols[0], np.clip(np.arange(w) + dx, 0, w - 1))
        assert (out[i, 1] == out[i, 0]).all()  # both frames of the sample shifted alike
        shifts.add((dy, dx))
    assert len(shifts) > 1
    assert RandomShift(0)(b) is b


def test_augmentation_reproducible_and_independent_of_batching() -> None:
    aug = Compose([RandomShift(2, seed=3), ColorJitter(0.4, seed=4)])
    b = _gradient_batch()
    first = aug(b, epoch=1)
    again = aug(b, epoch=1)
    for key in B.IMAGE_KEYS:
        np.testing.assert_array_equal(first[key], again[key])
    halves = [aug({k: v[s] for k, v in b.items()}, epoch=1) for s in (slice(0, 3), slice(3, 6))]
    np.testing.assert_array_equal(np.concatenate([h[B.RGB_A] for h in halves]), first[B.RGB_A])
    other_epoch = aug(b, epoch=2)
    assert not (other_epoch[B.RGB_A] == first[B.RGB_A]).all()
    assert not (first[B.RGB_A] == first[B.RGB_B]).all()  # cameras get their own draws


def test_color_jitter_keeps_uint8_and_bounds() -> None:
    b = _gradient_batch()
    out = ColorJitter(1.0, seed=0)(b, epoch=0)
    assert out[B.RGB_A].dtype == np.uint8 and out[B.RGB_A].shape == b[B.RGB_A].shape
    assert not (out[B.RGB_A] == b[B.RGB_A]).all()
    with pytest.raises(SchemaError, match="uint8 numpy images"):
        ColorJitter(0.5)({**b, B.RGB_A: b[B.RGB_A].astype(np.float32)})
    with pytest.raises(ValueError):
        ColorJitter(1.5)


def test_resize_numpy_matches_known_values_and_torch() -> None:
    img = np.zeros((1, 1, 4, 4, 3), np.uint8)
    img[:, :, :2] = 200  # top two rows bright
    out = Resize((2, 2))({B.RGB_A: img, B.RGB_B: img})[B.RGB_A]
    assert out.shape == (1, 1, 2, 2, 3) and out.dtype == np.uint8
    assert out[0, 0, :, 0, 0].tolist() == [200, 0]
    up = Resize((8, 6))({B.RGB_A: img, B.RGB_B: img})[B.RGB_A]
    assert up.shape == (1, 1, 8, 6, 3)
    torch = pytest.importorskip("torch")
    t_up = Resize((8, 6))({B.RGB_A: torch.from_numpy(img), B.RGB_B: torch.from_numpy(img)})[B.RGB_A]
    assert t_up.dtype == torch.uint8 and tuple(t_up.shape) == (1, 1, 8, 6, 3)
    assert np.abs(t_up.numpy().astype(int) - up.astype(int)).max() <= 1


def test_images_to_float_numpy_and_torch() -> None:
    b = _gradient_batch()
    out = ImagesToFloat(channels_first=True)(b)
    assert out[B.RGB_A].dtype == np.float32 and out[B.RGB_A].shape == (6, 2, 3, 12, 10)
    assert out[B.RGB_A].max() <= 1.0 and out[B.RGB_A][0, 0, 0, 0, 1] == pytest.approx(1 / 255)
    torch = pytest.importorskip("torch")
    t = ImagesToFloat()({k: torch.from_numpy(v) for k, v in b.items()})
    assert t[B.RGB_A].dtype == torch.float32 and tuple(t[B.RGB_A].shape) == (6, 2, 12, 10, 3)
    np.testing.assert_allclose(t[B.RGB_A].numpy(), ImagesToFloat()(b)[B.RGB_A])


def test_dataset_augmentation_seeded_by_epoch_and_train_only(tmp_path: Path) -> None:
    write_many(tmp_path, [("lift", f"e{i}", i, 4) for i in range(4)])
    cfg = DatasetConfig(
        roots=[str(tmp_path)],
        val_fraction=0.25,
        normalize=False,
        augment=AugmentConfig(enabled=True, shift_pixels=0, color_jitter=0.5),
    )
    train = MultiTaskDataset.from_config(cfg, "train")
    idx = [0, 3, 5]
    a = train.__getitems__(IndexBatch(idx, epoch=0))
    b = train.__getitems__(IndexBatch(idx, epoch=0))
    c = train.__getitems__(IndexBatch(idx, epoch=1))
    np.testing.assert_array_equal(a[B.RGB_A], b[B.RGB_A])
    assert not (a[B.RGB_A] == c[B.RGB_A]).all()
    single = train.__getitems__(IndexBatch([3], epoch=0))
    np.testing.assert_array_equal(single[B.RGB_A][0], a[B.RGB_A][1])
    val = MultiTaskDataset.from_config(cfg, "val")
    assert not any(isinstance(t, ColorJitter) for t in val.transforms.transforms)
    raw = MultiTaskDataset(tmp_path, split="val", val_fraction=0.25).__getitems__([0])
    np.testing.assert_array_equal(val.__getitems__([0])[B.RGB_A], raw[B.RGB_A])
