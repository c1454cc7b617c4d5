"""Vision encoder: a small conv net trained from scratch, one feature vector per camera image.

Images arrive as ``uint8`` or float in ``[0, 1]``, channels-last
``(B, To, H, W, 3)``. They are resized in-model to ``image_size`` (cheap
average pooling when the factor is an integer) so the dataset can keep its
native resolution, then encoded by stride-2 conv layers and pooled either with
a spatial softmax (one expected ``(x, y)`` keypoint per channel, which keeps
*where* things are - what a manipulation policy needs) or global averaging.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def images_to_float(images: torch.Tensor) -> torch.Tensor:
    """``uint8`` images to float in ``[0, 1]`` (float input passes through), same shape."""
    if images.dtype == torch.uint8:
        return images.float().div_(255.0)
    return images.float()


def resize_images(images: torch.Tensor, size: int) -> torch.Tensor:
    """Resize ``(M, 3, H, W)`` float images to ``(M, 3, size, size)``."""
    h, w = images.shape[-2:]
    if (h, w) == (size, size):
        return images
    if h == w and h % size == 0:
        k = h // size
        return F.avg_pool2d(images, kernel_size=k, stride=k)  # (M, 3, size, size)
    return F.interpolate(
        images, size=(size, size), mode="bilinear", align_corners=False, antialias=True
    )


class SpatialSoftmax(nn.Module):
    """Per channel, the softmax-weighted mean pixel position: ``(M, C, h, w) -> (M, 2C)``."""

    def __init__(self) -> None:
        super().__init__()
        # Learned temperature: sharp keypoints once the features are confident.
        self.log_temperature = nn.Parameter(torch.zeros(()))

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        m, c, h, w = feats.shape
        # Coordinates in [-1, 1]; built on the features' device and dtype.
        ys = torch.linspace(-1.0, 1.0, h, device=feats.device, dtype=feats.dtype)
        xs = torch.linspace(-1.0, 1.0, w, device=feats.device, dtype=feats.dtype)
        logits = feats.reshape(m, c, h * w) / self.log_temperature.exp()  # (M, C, h*w)
        attn = logits.softmax(dim=-1).reshape(m, c, h, w)  # (M, C, h, w)
        ex = (attn.sum(dim=2) * xs).sum(dim=-1)  # (M, C)
        ey = (attn.sum(dim=3) * ys).sum(dim=-1)  # (M, C)
        return torch.cat([ex, ey], dim=-1)  # (M, 2C)


class ConvEncoder(nn.Module):
    """3x3 conv stack (stride 2 unless told) + pooling + projection: ``(M, 3, S, S) float -> (M, out_dim)``.

    No normalisation inside the conv stack: on CPU, GroupNorm costs as much as
    the convolutions themselves, and the LayerNorm after the projection keeps
    the features' scale in check. A 1x1 conv turns the last feature map into
    the maps the pooling reads (keypoint heat maps for the spatial softmax).
    """

    def __init__(
        self,
        *,
        channels: Sequence[int] = (16, 32, 64),
        strides: Sequence[int] | None = None,
        out_dim: int = 64,
        pool: str = "spatial_softmax",
        in_channels: int = 3,
        cond_dim: int | None = None,
    ) -> None:
        super().__init__()
        strides = list(strides) if strides is not None else [2] * len(channels)
        layers: list[nn.Module] = []
        prev = in_channels
        for ch, stride in zip(channels, strides, strict=True):
            layers += [nn.Conv2d(prev, ch, 3, stride=stride, padding=1), nn.ReLU()]
            prev = ch
        layers += [nn.Conv2d(prev, prev, 1)]
        self.net = nn.Sequential(*layers)
        # Optional FiLM of the last feature map by a conditioning vector (the instruction):
        # lets the keypoints follow what the instruction names. Starts as the identity.
        self.film: nn.Linear | None = None
        if cond_dim:
            self.film = nn.Linear(cond_dim, 2 * prev)
            nn.init.zeros_(self.film.weight)
            nn.init.zeros_(self.film.bias)
        if pool == "spatial_softmax":
            self.pool: nn.Module = SpatialSoftmax()
            pooled = 2 * prev
        elif pool == "avg":
            self.pool = nn.Sequential(nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
            pooled = prev
        else:
            raise ValueError(f"unknown vision pool {pool!r} (expected 'spatial_softmax' or 'avg')")
        self.proj = nn.Sequential(nn.Linear(pooled, out_dim), nn.LayerNorm(out_dim))
        self.out_dim = out_dim

    def forward(self, images: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        feats = self.net[:-1](images)  # (M, C, h, w)
        if self.film is not None and cond is not None:
            scale, shift = self.film(cond).chunk(2, dim=-1)  # (M, C) each
            feats = (
                feats * (1.0 + scale[:, :, None, None]) + shift[:, :, None, None]
            )  # (M, C, h, w)
        feats = self.net[-1](feats)  # (M, C, h, w)
        return self.proj(self.pool(feats))  # (M, out_dim)


class CameraEncoder(nn.Module):
    """Encodes the two cameras' image histories: ``2 x (B, To, H, W, 3) -> (B, To, 2, D)``.

    With ``share=True`` one conv net sees both cameras (batched together, plus a
    learned per-camera embedding); otherwise each camera has its own.
    """

    def __init__(
        self,
        *,
        image_size: int,
        channels: Sequence[int],
        strides: Sequence[int] | None = None,
        out_dim: int,
        pool: str,
        share: bool,
        cond_dim: int | None = None,
    ) -> None:
        super().__init__()
        self.image_size = image_size
        self.share = share
        n_nets = 1 if share else 2
        self.nets = nn.ModuleList(
            ConvEncoder(
                channels=channels, strides=strides, out_dim=out_dim, pool=pool, cond_dim=cond_dim
            )
            for _ in range(n_nets)
        )
        self.camera_embed = nn.Parameter(torch.zeros(2, out_dim))
        self.out_dim = out_dim
        # Roughly centre and scale [0, 1] pixels.
        self.pixel_mean = 0.5
        self.pixel_std = 0.25

    def _prep(self, images: torch.Tensor) -> torch.Tensor:
        b, t, h, w, c = images.shape
        x = images_to_float(images).reshape(b * t, h, w, c).permute(0, 3, 1, 2)  # (B*To, 3, H, W)
        x = resize_images(x, self.image_size)  # (B*To, 3, S, S)
        return (x - self.pixel_mean) / self.pixel_std

    def forward(
        self, rgb_a: torch.Tensor, rgb_b: torch.Tensor, cond: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``cond (B, C)``, when given, conditions every image of its sample (FiLM)."""
        b, t = rgb_a.shape[:2]
        xa, xb = self._prep(rgb_a), self._prep(rgb_b)  # (B*To, 3, S, S) each
        per_image = None if cond is None else cond.repeat_interleave(t, dim=0)  # (B*To, C)
        if self.share:
            both = torch.cat([xa, xb], dim=0)  # (2*B*To, 3, S, S)
            both_cond = (
                None if per_image is None else torch.cat([per_image, per_image])
            )  # (2*B*To, C)
            feats = self.nets[0](both, both_cond).reshape(2, b, t, self.out_dim)  # (2, B, To, D)
        else:
            feats = torch.stack([self.nets[0](xa, per_image), self.nets[1](xb, per_image)]).reshape(
                2, b, t, self.out_dim
            )  # (2, B, To, D)
        feats = feats + self.camera_embed[:, None, None, :]  # (2, B, To, D)
        return feats.permute(1, 2, 0, 3)  # (B, To, 2, D)
