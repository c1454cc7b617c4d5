"""Temporal prediction for the ``lossless`` codec: frames to residuals and back (numpy only).

Frames are coded in groups (``gop``). The first frame of a group is predicted from
its own pixels (``left + up - up_left``, undone by two cumulative sums); every later
frame, per 8x8 block, from one of two references the decoder also holds:

* ``PREV``: the previous frame;
* ``AVERAGE``: a running average of the frames (weight 1/2), which averages the
  sensor noise out where the scene is still, plus its mean error in the frame
  before over that block (the *bias*: the average lags behind drifting light).

The encoder records the pick per block (the *block map*). When the whole picture
moves (a panning camera), it may record a global shift in eighths of a pixel
instead: the frame is then predicted from the previous frame resampled
bilinearly by that shift (which also averages its noise), and the average
restarts from it. Residuals are ``frame - prediction`` modulo 256, stored as
they are; ``codecs._predictive_stream`` entropy-codes them. (Zig-zag ordering,
which maps small magnitudes to small bytes, changed the zstd-coded size by
0.09% on the benchmark set, since zstd's literal coder does not care which byte
value a symbol has, and cost decoding time, so it is not used.)

All arithmetic is integer (the average holds 16 x the pixel value in ``int16``),
so decoding is bit-exact on every platform, and a few numpy operations per frame,
which is what makes it fast. Frames are coded edge-padded to whole blocks.
"""

from __future__ import annotations

import numpy as np

from teamvla_schema.errors import SchemaError

#: Side length of the blocks that pick their reference.
BLOCK = 8
#: The largest global shift, in eighths of a pixel (4 pixels).
MAX_SHIFT = 32
_PAD = MAX_SHIFT // 8 + 1
#: Block-map values: which reference predicts the block.
PREV, AVERAGE = 0, 1
#: A global shift is used only when it predicts at least this much better than the
#: block map (resampling costs decoding time).
_SHIFT_GAIN = 0.97


def _residual_bytes(residual: np.ndarray) -> np.ndarray:
    """Integer residuals modulo 256, as bytes."""
    return (residual & 255).astype(np.uint8)


def blocks(h: int, w: int) -> tuple[int, int]:
    """Blocks per column and per row; frames are coded edge-padded to whole blocks."""
    return -(-h // BLOCK), -(-w // BLOCK)


def padded(frames: np.ndarray) -> np.ndarray:
    """``frames`` ``(T, H, W, 3)`` edge-padded to whole blocks (the same array when they fit)."""
    h, w = frames.shape[1:3]
    bh, bw = blocks(h, w)
    if (bh * BLOCK, bw * BLOCK) == (h, w):
        return frames
    return np.pad(frames, ((0, 0), (0, bh * BLOCK - h), (0, bw * BLOCK - w), (0, 0)), mode="edge")


def _by_block(frame: np.ndarray) -> np.ndarray:
    """A ``(..., bh * 8, bw * 8, 3)`` array viewed as ``(..., bh, 8, bw, 8, 3)``."""
    *lead, ph, pw, c = frame.shape
    return frame.reshape(*lead, ph // BLOCK, BLOCK, pw // BLOCK, BLOCK, c)


def _block_sums(values: np.ndarray) -> np.ndarray:
    """Sums of ``(..., bh * 8, bw * 8, 3)`` int16 values per block and channel: ``(..., bh, bw, 3)``.

    64 values of at most 255 in magnitude: int16 holds the sum exactly.
    """
    rows = _by_block(values).sum(axis=-4, dtype=np.int16)  # (..., bh, bw, 8, 3)
    starts = np.arange(0, rows.shape[-3] * BLOCK, BLOCK)
    return np.add.reduceat(rows.reshape(*rows.shape[:-3], -1, 3), starts, axis=-2)


def _block_bias(error: np.ndarray) -> np.ndarray:
    """Mean of ``error`` ``(bh * 8, bw * 8, 3)`` per block and channel, rounded: ``(bh, bw, 3)``.

    The running average lags behind lighting that drifts; its error in the frame
    just decoded, per block, predicts its error in the next one (the decoder knows
    it too, so it costs no side information).
    """
    sums = _block_sums(error)
    sums += BLOCK * BLOCK // 2
    sums >>= 6  # floor(mean + 1/2)
    return sums


def _spread(per_block: np.ndarray) -> np.ndarray:
    """``(bh, bw, 3)`` per-block values over the ``(bh * 8, bw * 8, 3)`` pixels."""
    return per_block.repeat(BLOCK, axis=1).repeat(BLOCK, axis=0)


def _edge_padded(frame: np.ndarray) -> np.ndarray:
    """``frame`` in int16 with :data:`_PAD` edge pixels repeated on every side (cheaper than np.pad)."""
    h, w = frame.shape[:2]
    out = np.empty((h + 2 * _PAD, w + 2 * _PAD, frame.shape[2]), np.int16)
    out[_PAD : _PAD + h, _PAD : _PAD + w] = frame
    out[_PAD : _PAD + h, :_PAD] = frame[:, :1]
    out[_PAD : _PAD + h, _PAD + w :] = frame[:, -1:]
    out[:_PAD] = out[_PAD]
    out[_PAD + h :] = out[_PAD + h - 1]
    return out


def warp(frame: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """16 x ``frame`` ``(H, W, 3)`` sampled at ``(y + dy/8, x + dx/8)``, bilinear, edges clamped.

    ``frame`` holds pixel values (0..255). The weights of the four neighbours
    sum to 64, so their weighted sum ``S`` stays below 2**14 and int16 holds it;
    the result is ``round(16 * S / 64)``, i.e. ``(S + 2) >> 2``, in int16.
    """
    h, w = frame.shape[:2]
    iy, fy = dy >> 3, dy & 7
    ix, fx = dx >> 3, dx & 7
    padded = _edge_padded(frame)
    y0, x0 = _PAD + iy, _PAD + ix
    rows = padded[y0 : y0 + h + 1]  # (H + 1, W + 2 * PAD, 3)
    cols = rows[:, x0 : x0 + w] * np.int16(8 - fx)  # (H + 1, W, 3)
    if fx:
        cols += rows[:, x0 + 1 : x0 + 1 + w] * np.int16(fx)
    out = cols[:h] * np.int16(8 - fy)  # (H, W, 3)
    if fy:
        out += cols[1:] * np.int16(fy)
    out += 2
    out >>= 2
    return out


def _key_residual(frame: np.ndarray) -> np.ndarray:
    """``frame - (left + up - up_left)`` modulo 256, as bytes (zeros outside the frame)."""
    x = frame.astype(np.int16)
    d = x.copy()
    d[1:] -= x[:-1]
    d[:, 1:] -= x[:, :-1]
    d[1:, 1:] += x[:-1, :-1]
    return _residual_bytes(d)


def _key_frame(residual: np.ndarray) -> np.ndarray:
    """Inverse of :func:`_key_residual`: two cumulative sums modulo 256."""
    return np.cumsum(np.cumsum(residual, axis=0, dtype=np.uint8), axis=1, dtype=np.uint8)


def _estimate_shift(prev: np.ndarray, frame: np.ndarray) -> tuple[int, int]:
    """Global motion from ``prev`` to ``frame`` (pixels): Lucas-Kanade, in eighths of a pixel."""
    p = prev.astype(np.float32)
    f = frame.astype(np.float32)
    dy = dx = 0.0
    for _ in range(2):
        q = p if dy == dx == 0 else warp(prev, round(dy * 8), round(dx * 8)) / np.float32(16)
        gy = (q[2:, 1:-1] - q[:-2, 1:-1]) / 2
        gx = (q[1:-1, 2:] - q[1:-1, :-2]) / 2
        gt = f[1:-1, 1:-1] - q[1:-1, 1:-1]
        a = np.array([[(gy * gy).sum(), (gy * gx).sum()], [(gy * gx).sum(), (gx * gx).sum()]])
        b = np.array([(gy * gt).sum(), (gx * gt).sum()])
        if abs(np.linalg.det(a)) < 1e-6:
            break
        step = np.linalg.solve(a, b)
        dy, dx = float(np.clip(dy + step[0], -4, 4)), float(np.clip(dx + step[1], -4, 4))
    return round(dy * 8), round(dx * 8)


def _pick_shift(prev: np.ndarray, frame: np.ndarray) -> tuple[int, int, np.ndarray, int] | None:
    """The best global shift near the estimate: ``(dy, dx, warped prev x 16, absolute error)``.

    ``None`` when the estimate is no motion: sub-pixel shifts around zero would
    only blur (denoise) the reference, which the running average does for less
    decoding work.
    """
    ey, ex = _estimate_shift(prev, frame)
    if (ey, ex) == (0, 0):
        return None
    x = frame.astype(np.int16)
    best: tuple[int, int, np.ndarray, int] | None = None
    for dy in range(ey - 1, ey + 2):
        for dx in range(ex - 1, ex + 2):
            if (dy, dx) == (0, 0) or max(abs(dy), abs(dx)) > MAX_SHIFT:
                continue
            moved = warp(prev, dy, dx)
            err = int(np.abs(x - ((moved + 8) >> 4)).sum())
            if best is None or err < best[3]:
                best = (dy, dx, moved, err)
    return best


def encode_group(frames: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One group's ``(key residual, residuals, side information)`` as uint8/int8 arrays.

    ``frames`` ``(T, bh * 8, bw * 8, 3)`` are padded to whole blocks (:func:`padded`);
    :func:`decode_group` mirrors every step.
    """
    t, ph, pw, _ = frames.shape
    bh, bw = ph // BLOCK, pw // BLOCK
    average = frames[0].astype(np.int16) << 4  # 16 x the running average (weight 1/2)
    bias = np.zeros((bh, bw, 3), np.int16)  # the average's error in the frame before, per block
    residuals = np.empty((t - 1, ph, pw, 3), np.uint8)
    side = np.zeros((t - 1, 2 + bh * bw), np.int8)
    for i in range(1, t):
        x = frames[i].astype(np.int16)
        from_average = (average + 8) >> 4
        candidates = np.stack([frames[i - 1].astype(np.int16), from_average])  # (2, PH, PW, 3)
        candidates[1] += _spread(bias)
        cost = _block_sums(np.abs(x - candidates)).sum(axis=-1, dtype=np.int32)  # (2, bh, bw)
        pick = cost.argmin(axis=0)
        shift = _pick_shift(frames[i - 1], frames[i])
        if shift is not None and shift[3] < _SHIFT_GAIN * int(cost.min(axis=0).sum()):
            dy, dx, moved, _ = shift
            average = moved
            pred = (moved + 8) >> 4
            bias[...] = 0
            side[i - 1, :2] = (dy, dx)
        else:
            use_average = (pick == AVERAGE)[:, None, :, None, None]  # (bh, 1, bw, 1, 1)
            pred = np.where(use_average, _by_block(candidates[1]), _by_block(candidates[0]))
            pred = pred.reshape(ph, pw, 3)
            bias = _block_bias(x - from_average)
            side[i - 1, 2:] = pick.ravel()
        residuals[i - 1] = _residual_bytes(x - pred)
        average = (average + (x << 4)) >> 1
    return _key_residual(frames[0]), residuals, side


def side_bytes(frames: int, bh: int, bw: int) -> int:
    """Bytes of side information of a group of ``frames`` frames: a shift and a block map each."""
    return (frames - 1) * (2 + bh * bw)


def decode_group(
    key: np.ndarray, residuals: np.ndarray, side: np.ndarray, out: np.ndarray | None = None
) -> np.ndarray:
    """Frames of one group, padded to whole blocks, from :func:`encode_group`'s arrays.

    ``key`` ``(PH, PW, 3)`` uint8, ``residuals`` ``(n, PH, PW, 3)`` uint8 (the first ``n``
    of the group's), ``side`` ``(n, 2 + bh * bw)`` int8; ``n + 1`` frames come back, in
    ``out`` (``(n + 1, PH, PW, 3)`` uint8) when given. Side information out of range
    raises :class:`SchemaError`.
    """
    ph, pw = key.shape[:2]
    bh, bw = ph // BLOCK, pw // BLOCK
    n = len(residuals)
    maps = side[:, 2:].reshape(n, bh, bw)
    if (
        np.abs(side[:, :2].astype(np.int16)).max(initial=0) > MAX_SHIFT
        or maps.min(initial=0) < 0
        or maps.max(initial=0) > AVERAGE
    ):
        raise SchemaError("corrupt lossless data: side information out of range")
    if out is None:
        out = np.empty((n + 1, ph, pw, 3), np.uint8)
    out[0] = _key_frame(key)
    average = out[0].astype(np.int16) << 4  # 16 x the running average (weight 1/2)
    bias: np.ndarray | None = None  # the average's error in the frame before, per block
    # Frame by frame, so that every temporary stays in the processor's cache.
    for i in range(1, n + 1):
        prev, frame = out[i - 1], out[i]
        dy, dx = int(side[i - 1, 0]), int(side[i - 1, 1])
        if dy or dx:
            average = warp(prev, dy, dx)
            pred = average + 8
            pred >>= 4
            pred = pred.astype(np.uint8)  # modulo 256
            bias = None
        else:
            from_average = average + 8
            from_average >>= 4
            pred = from_average.astype(np.uint8)  # modulo 256
            if bias is not None:
                pred += _spread(bias.astype(np.uint8))  # modulo 256
            use_average = maps[i - 1] == AVERAGE
            if not use_average.all():  # prev + mask * (average's prediction - prev), modulo 256
                pred -= prev
                # The mask at full size: a broadcast over the 3 channels would be far slower.
                pred *= _spread(use_average.astype(np.uint8)[..., None].repeat(3, axis=2))
                pred += prev
        np.add(pred, residuals[i - 1], out=frame)  # modulo 256
        if not (dy or dx):
            bias = _block_bias(np.subtract(frame, from_average, dtype=np.int16))
        x = frame.astype(np.int16)
        x <<= 3
        average >>= 1  # (average + 16 x) >> 1 exactly, as 16 x is even
        average += x
    return out
