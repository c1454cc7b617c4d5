"""Observation encoders: camera images, instruction text and joint states."""

from teamvla_train.models.encoders.proprio import ProprioEncoder
from teamvla_train.models.encoders.text import (
    HashedTextEncoder,
    instruction_ids,
    stable_bucket,
    tokenize,
)
from teamvla_train.models.encoders.vision import (
    CameraEncoder,
    ConvEncoder,
    SpatialSoftmax,
    images_to_float,
)

__all__ = [
    "CameraEncoder",
    "ConvEncoder",
    "HashedTextEncoder",
    "ProprioEncoder",
    "SpatialSoftmax",
    "images_to_float",
    "instruction_ids",
    "stable_bucket",
    "tokenize",
]
