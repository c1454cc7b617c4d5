"""`teamvla inspect` shows how each encoded field is stored: codec, params, stream bytes, PSNR."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from teamvla_schema import EpisodeWriter, read_episode_meta
from teamvla_schema.cli import main

pytest.importorskip("av")  # teamvla-schema[video]; the dev group has it


def _write(root: Path, image_codec: str | None = None, video_crf: int = 30) -> Path:
    y, x = np.mgrid[0:32, 0:32]
    with EpisodeWriter(root, image_codec=image_codec, video_crf=video_crf) as writer:
        writer.start_episode({"task": "lift"})
        for t in range(6):
            img = np.stack([x * 4 + t, y * 4, (x + y) * 2], -1).astype(np.uint8)
            writer.add_step({"rgb_a": img, "rgb_b": img[::-1].copy(),
                             "q_a": np.zeros(7, np.float32), "q_b": np.zeros(7, np.float32),
                             "action_a": np.zeros(7, np.float32), "action_b": np.zeros(7, np.float32),
                             "grip_a": np.float32(0), "grip_b": np.float32(0),
                             "instruction": "lift the red block", "task": "lift",
                             "success": t == 5})  # fmt: skip
        return writer.end_episode()


def test_inspect_shows_each_encoded_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _write(tmp_path / "video", image_codec="video", video_crf=25)
    assert main(["inspect", str(path)]) == 0
    out = capsys.readouterr().out
    assert re.search(r"rgb_a\s+uint8\s+\[6,32,32,3\]\s+video stream", out)
    assert "encodings:" in out
    encodings = read_episode_meta(path).encodings
    for name in ("rgb_a", "rgb_b"):
        enc = encodings[name]
        line = next(ln for ln in out.splitlines() if ln.split()[:2] == [name, "video"])
        assert "crf=25" in line and "gop=30" in line
        assert f"{enc.nbytes:,} bytes" in line
        assert enc.psnr is not None
        assert f"PSNR {enc.psnr:.2f} dB" in line or "PSNR inf dB" in line


def test_inspect_lossless_and_plain(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path / "lossless", image_codec="lossless")
    assert main(["inspect", str(path)]) == 0
    out = capsys.readouterr().out
    line = next(ln for ln in out.splitlines() if ln.split()[:2] == ["rgb_b", "lossless"])
    assert "lossless (bit-exact)" in line and "bytes (" in line and "% of" in line
    plain = _write(tmp_path / "plain")
    assert main(["inspect", str(plain)]) == 0
    out = capsys.readouterr().out
    assert "encodings:" not in out and "stream" not in out
