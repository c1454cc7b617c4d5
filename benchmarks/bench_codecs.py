#!/usr/bin/env python3
"""Image-sequence codecs on camera-like frames, side by side (docs/storage.md).

    python benchmarks/bench_codecs.py            # 64 episodes x 100 steps x 2 cameras, 96x96
    python benchmarks/bench_codecs.py --quick    # 4 episodes x 20 steps (smoke test)

The benchmark set is made to look like real robot cameras, not flat-shaded renders:

* a smooth per-channel colour gradient, three oriented sinusoids (2-6 levels) and a
  smoothed random texture field (about 6 levels) for the background;
* lighting drift: a global gain oscillating by +-8% over the episode and a travelling
  +-5% horizontal light band;
* a moving object: an anti-aliased, radially shaded disc on a bouncing sub-pixel path;
* camera 1 is static; camera 0 pans slowly (sub-pixel, bilinear), like a wrist camera;
* Gaussian sensor noise (sigma = 1 8-bit level), then rounding; the clean signal stays in
  12..243 so clipping never changes the noise.

Rows: per-frame PNG (Pillow defaults, the lossless baseline LeRobot uses for images),
FFV1 (intra-only lossless video), H.264 lossless (libx264rgb, qp 0: the ``lossless`` codec of
teamvla-schema 0.1.0), our ``lossless`` codec (temporal prediction + zstd), LeRobot-style
AV1 (libsvtav1, yuv420p, crf 30, g=2, the encoder's default preset: LeRobot's
``encode_video_frames`` defaults; stored here as raw packets, without the mp4 container)
and our ``video`` codec at several crf values. ``noise bound`` is what a perfect predictor
(knowing the clean signal) would still store: the entropy of the rounded Gaussian noise.
"""

from __future__ import annotations

import argparse
import io
import math
import sys
import time
from collections.abc import Callable

import numpy as np

try:
    import av
    from PIL import Image
    from teamvla_schema.codecs import get_codec
    from teamvla_schema.codecs import lossless as lossless_codec
    from teamvla_schema.codecs._stream import encode_stream
except ImportError as exc:  # pragma: no cover
    sys.exit(f"bench_codecs needs PyAV and Pillow ({exc}): install teamvla-schema[video] pillow")

NOISE_SIGMA = 1.0
CRFS = (20, 25, 30, 35, 40)


def camera_like_episode(
    rng: np.random.Generator, steps: int, size: int, *, pan: bool
) -> tuple[np.ndarray, np.ndarray]:
    """``(frames uint8, clean float32)``, both ``(steps, size, size, 3)``."""
    pad = 8
    n = size + 2 * pad
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float32) / size
    base = np.empty((n, n, 3), np.float32)
    for c in range(3):
        gx, gy = rng.uniform(-60, 60, 2)
        base[..., c] = rng.uniform(90, 160) + gx * (xx - 0.5) + gy * (yy - 0.5)
    for _ in range(3):
        freq, angle, phase = rng.uniform(4, 14), rng.uniform(0, np.pi), rng.uniform(0, 2 * np.pi)
        wave = np.sin(2 * np.pi * freq * (np.cos(angle) * xx + np.sin(angle) * yy) + phase)
        base += rng.uniform(2, 6, 3).astype(np.float32) * wave[..., None]
    field = rng.normal(0, 1, (n, n)).astype(np.float32)
    for _ in range(2):
        field = (field + sum(np.roll(field, s, a) for s in (1, -1) for a in (0, 1))) / 5
    base += (6 * field)[..., None] * rng.uniform(0.6, 1.0, 3).astype(np.float32)
    oy, ox = np.mgrid[0:size, 0:size].astype(np.float32)
    colour = rng.uniform(40, 210, 3).astype(np.float32)
    radius = rng.uniform(8, 16)
    p0, vel = rng.uniform(20, size - 20, 2), rng.uniform(-0.6, 0.6, 2)
    drift_f, drift_ph = rng.uniform(0.5, 1.5), rng.uniform(0, 2 * np.pi)
    span = size - 24
    clean = np.empty((steps, size, size, 3), np.float32)
    for t in range(steps):
        if pan:
            sx = pad + 4 * np.sin(2 * np.pi * t / steps)
            sy = pad + 3 * np.cos(2 * np.pi * t / steps)
            ix, iy = int(sx), int(sy)
            fx, fy = sx - ix, sy - iy
            b = base[iy : iy + size + 1, ix : ix + size + 1]
            top = (1 - fx) * b[:-1, :-1] + fx * b[:-1, 1:]
            bottom = (1 - fx) * b[1:, :-1] + fx * b[1:, 1:]
            img = (1 - fy) * top + fy * bottom
        else:
            img = base[pad : pad + size, pad : pad + size].copy()
        gain = 1.0 + 0.08 * np.sin(2 * np.pi * drift_f * t / steps + drift_ph)
        light = 1.0 + 0.05 * np.sin(2 * np.pi * (ox / size + t / steps))
        img = img * (gain * light)[..., None]
        centre = np.abs((p0 + vel * t - 12) % (2 * span))
        centre = np.where(centre > span, 2 * span - centre, centre) + 12
        dist = np.sqrt((oy - centre[0]) ** 2 + (ox - centre[1]) ** 2)
        alpha = np.clip(radius - dist + 0.5, 0, 1)[..., None]
        shade = (1.0 - 0.35 * dist / radius).clip(0.5, 1)[..., None]
        clean[t] = img * (1 - alpha) + alpha * colour * shade * gain
    clean = np.clip(clean, 12, 243)
    noisy = np.rint(clean + rng.normal(0, NOISE_SIGMA, clean.shape)).clip(0, 255)
    return noisy.astype(np.uint8), clean


def noise_entropy_bits(sigma: float, offsets: int = 64) -> float:
    """Bits per sample of ``round(s + N(0, sigma^2))`` given ``s``, averaged over frac(s)."""
    ks = np.arange(-int(10 * sigma) - 2, int(10 * sigma) + 3)
    total = 0.0
    for u in (np.arange(offsets) + 0.5) / offsets:
        cdf = np.array([0.5 * (1 + math.erf((k - u) / (sigma * math.sqrt(2)))) for k in ks])
        p = np.diff(cdf)
        p = p[p > 0]
        total += float(-(p * np.log2(p)).sum())
    return total / offsets


def png_encode(frames: np.ndarray) -> list[bytes]:
    out = []
    for frame in frames:
        buf = io.BytesIO()
        Image.fromarray(frame).save(buf, format="PNG")
        out.append(buf.getvalue())
    return out


def png_decode(blobs: list[bytes]) -> np.ndarray:
    return np.stack([np.asarray(Image.open(io.BytesIO(b)).convert("RGB")) for b in blobs])


def ffv1_encode(frames: np.ndarray) -> bytes:
    buf = io.BytesIO()
    with av.open(buf, "w", format="matroska") as out:
        stream = out.add_stream("ffv1", rate=30)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "bgr0"
        stream.options = {"level": "3", "coder": "range_tab", "context": "1"}
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return buf.getvalue()


def ffv1_decode(data: bytes) -> np.ndarray:
    with av.open(io.BytesIO(data)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def lerobot_av1_encode(frames: np.ndarray) -> bytes:
    return encode_stream(
        frames,
        encoder="libsvtav1",
        bitstream="av1",
        pix_fmt="yuv420p",
        gop=2,
        options={"crf": "30"},
        codec="video",
        params={"crf": 30, "gop": 2, "preset": None},
        even_min=8,
    )


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255**2 / mse)


class Row:
    def __init__(self, name: str, lossless: bool) -> None:
        self.name, self.lossless = name, lossless
        self.bytes = 0
        self.enc = self.dec = 0.0
        self.sq_err = 0.0
        self.exact = True

    def run(self, frames: np.ndarray, enc: Callable, dec: Callable) -> None:
        t0 = time.perf_counter()
        data = enc(frames)
        t1 = time.perf_counter()
        back = dec(data)
        t2 = time.perf_counter()
        self.enc += t1 - t0
        self.dec += t2 - t1
        self.bytes += sum(map(len, data)) if isinstance(data, list) else len(data)
        self.sq_err += float(np.sum((back.astype(np.float64) - frames) ** 2))
        self.exact &= bool(np.array_equal(back, frames))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="4 episodes x 20 steps")
    parser.add_argument("--episodes", type=int, default=64)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.quick:
        args.episodes, args.steps = 4, 20
    lossless, video = get_codec("lossless"), get_codec("video")
    rows: dict[str, Row] = {}

    def row(name: str, exact: bool) -> Row:
        return rows.setdefault(name, Row(name, exact))

    rng = np.random.default_rng(args.seed)
    raw = n_samples = 0
    for _ in range(args.episodes):
        for camera in range(2):
            frames, _clean = camera_like_episode(rng, args.steps, args.size, pan=camera == 0)
            shape = frames.shape
            raw += frames.nbytes
            n_samples += frames.size
            row("PNG per frame (Pillow)", True).run(frames, png_encode, png_decode)
            row("FFV1 (intra, range coder)", True).run(frames, ffv1_encode, ffv1_decode)
            row("x264rgb qp0 g=30 (lossless 0.1.0)", True).run(
                frames,
                lambda f: lossless_codec.encode_x264(f, gop=30),
                lambda d, s=shape: lossless.decode(d, shape=s),
            )
            for gop in (30, 100):
                row(f"lossless (predictive) g={gop}", True).run(
                    frames,
                    lambda f, g=gop: lossless.encode(f, gop=g),
                    lambda d, s=shape: lossless.decode(d, shape=s),
                )
            row("LeRobot AV1 (svtav1 crf30 g=2)", False).run(
                frames, lerobot_av1_encode, lambda d, s=shape: video.decode(d, shape=s)
            )
            for crf in CRFS:
                row(f"video av1 crf={crf} g=30", False).run(
                    frames,
                    lambda f, c=crf: video.encode(f, crf=c),
                    lambda d, s=shape: video.decode(d, shape=s),
                )
    png_bytes = rows["PNG per frame (Pillow)"].bytes
    bound = n_samples * noise_entropy_bits(NOISE_SIGMA) / 8
    n_frames = args.episodes * 2 * args.steps
    print(
        f"{args.episodes} episodes x {args.steps} steps x 2 cameras at {args.size}x{args.size}, "
        f"noise sigma {NOISE_SIGMA}: raw {raw / 1e6:.1f} MB ({n_frames} frames)"
    )
    print(
        f"{'codec':34s} {'bytes':>11s} {'% raw':>7s} {'x PNG':>6s} "
        f"{'enc fps':>8s} {'dec fps':>8s} {'PSNR dB':>8s}"
    )
    print(
        f"{'noise bound (perfect predictor)':34s} {bound:11.0f} {100 * bound / raw:7.2f} "
        f"{bound / png_bytes:6.3f}"
    )
    for r in rows.values():
        mse = r.sq_err / n_samples
        quality = "exact" if r.exact else f"{10 * math.log10(255**2 / mse):.2f}"
        if r.lossless and not r.exact:
            quality = "NOT EXACT"
        print(
            f"{r.name:34s} {r.bytes:11d} {100 * r.bytes / raw:7.2f} {r.bytes / png_bytes:6.3f} "
            f"{n_frames / r.enc:8.0f} {n_frames / r.dec:8.0f} {quality:>8s}"
        )
    return 0 if all(r.exact for r in rows.values() if r.lossless) else 1


if __name__ == "__main__":
    raise SystemExit(main())
