"""teamvla-schema: the torch-free contract of TeamVLA.

Step fields and validation, episode metadata, the pickle-free episode file
format with its atomic :class:`EpisodeWriter`, config loading, and checkpoint
IO that needs numpy alone.
"""

from teamvla_schema.checkpoint import (
    CheckpointInfo,
    load_checkpoint,
    read_checkpoint_info,
    save_checkpoint,
)
from teamvla_schema.episode import (
    Episode,
    EpisodeHeader,
    EpisodeWriter,
    find_episodes,
    iter_steps,
    read_episode,
    read_episode_meta,
    read_frames,
    validate_episode_file,
    write_episode_arrays,
)
from teamvla_schema.episode_codec import IMAGE_CODECS, FieldEncoding
from teamvla_schema.errors import SchemaError
from teamvla_schema.fields import (
    KNOWN_FIELDS,
    OPTIONAL_FIELDS,
    REQUIRED_FIELDS,
    FieldLayout,
    FieldSpec,
    step_layout,
    validate_step,
)
from teamvla_schema.meta import EPISODE_FILE_VERSION, EpisodeMeta, validate_episode_meta

__version__ = "0.1.0"

__all__ = [
    "EPISODE_FILE_VERSION",
    "IMAGE_CODECS",
    "KNOWN_FIELDS",
    "OPTIONAL_FIELDS",
    "REQUIRED_FIELDS",
    "CheckpointInfo",
    "Episode",
    "EpisodeHeader",
    "EpisodeMeta",
    "EpisodeWriter",
    "FieldEncoding",
    "FieldLayout",
    "FieldSpec",
    "SchemaError",
    "find_episodes",
    "iter_steps",
    "load_checkpoint",
    "read_checkpoint_info",
    "read_episode",
    "read_episode_meta",
    "read_frames",
    "save_checkpoint",
    "step_layout",
    "validate_episode_file",
    "validate_episode_meta",
    "validate_step",
    "write_episode_arrays",
]
