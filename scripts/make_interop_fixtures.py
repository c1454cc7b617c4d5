"""Write the interop fixtures in tests/fixtures/interop/ with the real libraries.

Run inside the nox ``interop`` environment (it has lerobot, robomimic, h5py)::

    uvx nox -s interop -- --make-fixtures     # or, in that environment:
    python scripts/make_interop_fixtures.py tests/fixtures/interop

* ``lerobot_aloha_video/`` and ``lerobot_aloha_images/``: two-arm, ALOHA-style
  datasets (14-d state and action, three cameras, effort, reward, done)
  recorded with LeRobot's own API (``LeRobotDataset.create``, ``add_frame``,
  ``save_episode``, ``finalize``), cameras as H.264 video / as PNG images.
* ``robomimic_twoarm.hdf5``: robomimic's published layout (``data/demo_<i>``
  with ``obs``, ``next_obs``, ``actions``, ``rewards``, ``dones``, ``states``,
  ``mask/``), written with h5py the way robomimic's own conversion scripts do
  (robomimic has no recording API) and then loaded with robomimic's
  ``SequenceDataset`` to prove it reads.

The values come from :func:`fixture_episodes`, which the tests call again to
know what the fixtures must contain. Only numpy is needed to import this file.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np

FPS = 10
LENGTHS = (4, 6)
HEIGHT, WIDTH = 24, 32
JOINTS = ("waist", "shoulder", "elbow", "forearm_roll", "wrist_angle", "wrist_rotate")
STATE_NAMES = [f"{side}_{j}" for side in ("left", "right") for j in (*JOINTS, "gripper")]
TASKS = ("insert the peg into the socket", "transfer the cube to the other arm")
CAMERAS = ("cam_left_wrist", "cam_right_wrist", "cam_high")
ENV_ARGS = {
    "env_name": "TwoArmLift",
    "type": 1,
    "env_kwargs": {"control_freq": 20, "robots": ["Panda", "Panda"]},
}


def _image(e: int, t: int, c: int) -> np.ndarray:
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH]
    img = np.empty((HEIGHT, WIDTH, 3), np.uint8)
    img[..., 0] = (6 * x + 9 * t + 40 * c) % 256
    img[..., 1] = (8 * y + 30 * e) % 256
    img[..., 2] = (3 * x + 3 * y + 17 * t + 50 * c) % 256
    return img


def fixture_episodes() -> list[dict[str, Any]]:
    """The fixtures' content: per episode, stacked arrays and the task text."""
    episodes = []
    for e, n in enumerate(LENGTHS):
        rng = np.random.default_rng(100 + e)
        episodes.append(
            {
                "task": TASKS[e],
                "state": rng.standard_normal((n, 14)).astype(np.float32),
                "action": rng.standard_normal((n, 14)).astype(np.float32),
                "effort": rng.standard_normal((n, 14)).astype(np.float32),
                "reward": (np.arange(n) == n - 1).astype(np.float32),
                "done": np.arange(n) == n - 1,
                "cameras": {
                    cam: np.stack([_image(e, t, c) for t in range(n)])
                    for c, cam in enumerate(CAMERAS)
                },
                # robomimic-only values, float64 as robosuite records them
                "joint64": rng.standard_normal((2, n, 7)),
                "actions64": rng.standard_normal((n, 16)),
                "eef64": rng.standard_normal((n, 3)),
                "states64": rng.standard_normal((n, 9)),
            }
        )
    return episodes


def record_lerobot(root: Path, video: bool) -> None:
    """Record the fixture episodes with LeRobot's recording API into ``root``."""
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    kind = "video" if video else "image"
    features = {f"observation.images.{cam}": {"dtype": kind, "shape": (HEIGHT, WIDTH, 3),
                                              "names": ["height", "width", "channels"]} for cam in CAMERAS}  # fmt: skip
    features.update(
        {
            "observation.state": {"dtype": "float32", "shape": (14,), "names": STATE_NAMES},
            "observation.effort": {"dtype": "float32", "shape": (14,), "names": STATE_NAMES},
            "action": {"dtype": "float32", "shape": (14,), "names": STATE_NAMES},
            "next.reward": {"dtype": "float32", "shape": (1,), "names": None},
            "next.done": {"dtype": "bool", "shape": (1,), "names": None},
        }
    )
    shutil.rmtree(root, ignore_errors=True)
    ds = LeRobotDataset.create(
        "teamvla/fixture", fps=FPS, root=root, robot_type="aloha", features=features,
        use_videos=video, vcodec="h264", image_writer_threads=0,
    )  # fmt: skip
    for ep in fixture_episodes():
        for t in range(len(ep["state"])):
            frame = {f"observation.images.{cam}": ep["cameras"][cam][t] for cam in CAMERAS}
            frame.update(
                {
                    "observation.state": ep["state"][t],
                    "observation.effort": ep["effort"][t],
                    "action": ep["action"][t],
                    "next.reward": ep["reward"][t : t + 1],
                    "next.done": ep["done"][t : t + 1],
                    "task": ep["task"],
                }
            )
            ds.add_frame(frame)
        ds.save_episode()
    ds.finalize()
    shutil.rmtree(root / "images", ignore_errors=True)  # LeRobot's temporary PNGs, if any are left
    for path in root.rglob("*.mp4"):
        path.chmod(0o644)  # LeRobot leaves its videos owner-only


def write_robomimic(path: Path) -> None:
    """Write the fixture episodes in robomimic's layout with h5py."""
    import h5py

    path.unlink(missing_ok=True)
    with h5py.File(path, "w") as f:
        data = f.create_group("data")
        total = 0
        for e, ep in enumerate(fixture_episodes()):
            n = len(ep["state"])
            g = data.create_group(f"demo_{e}")
            g.attrs["num_samples"] = n
            g.attrs["model_file"] = f"<mujoco model='fixture{e}'/>"
            obs = g.create_group("obs")
            obs.create_dataset(
                "robot0_eye_in_hand_image", data=ep["cameras"]["cam_left_wrist"], compression="gzip"
            )
            obs.create_dataset(
                "robot1_eye_in_hand_image",
                data=ep["cameras"]["cam_right_wrist"],
                compression="gzip",
            )
            obs.create_dataset("robot0_joint_pos", data=ep["joint64"][0])
            obs.create_dataset("robot1_joint_pos", data=ep["joint64"][1])
            obs.create_dataset("robot0_eef_pos", data=ep["eef64"])
            g.create_group("next_obs").create_dataset(
                "robot0_eef_pos", data=np.roll(ep["eef64"], -1, axis=0)
            )
            g.create_dataset("actions", data=ep["actions64"])
            g.create_dataset("rewards", data=ep["reward"].astype(np.float64))
            g.create_dataset("dones", data=ep["done"].astype(np.int64))
            g.create_dataset("states", data=ep["states64"])
            total += n
        data.attrs["total"] = total
        data.attrs["env_args"] = json.dumps(ENV_ARGS)
        mask = f.create_group("mask")
        mask.create_dataset("train", data=np.array([b"demo_0"]))
        mask.create_dataset("valid", data=np.array([b"demo_1"]))


def check_robomimic(path: Path) -> None:
    """Load the file with robomimic's SequenceDataset (proves the layout is robomimic's)."""
    import robomimic.utils.obs_utils as obs_utils
    from robomimic.utils.dataset import SequenceDataset

    keys = ["robot0_joint_pos", "robot1_joint_pos", "robot0_eye_in_hand_image"]
    obs_utils.initialize_obs_utils_with_obs_specs({"obs": {"low_dim": keys[:2], "rgb": keys[2:]}})
    ds = SequenceDataset(str(path), obs_keys=keys, dataset_keys=["actions", "rewards", "dones"],
                         load_next_obs=False, hdf5_cache_mode=None)  # fmt: skip
    assert len(ds) == sum(LENGTHS), len(ds)
    item = ds[0]
    assert item["actions"].shape == (1, 16), item["actions"].shape
    ds.close_and_delete_hdf5_handle()


def main(argv: list[str]) -> int:
    out = Path(argv[0] if argv else "tests/fixtures/interop")
    out.mkdir(parents=True, exist_ok=True)
    record_lerobot(out / "lerobot_aloha_video", video=True)
    record_lerobot(out / "lerobot_aloha_images", video=False)
    write_robomimic(out / "robomimic_twoarm.hdf5")
    check_robomimic(out / "robomimic_twoarm.hdf5")
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"fixtures written to {out}: {size / 1024:.0f} KiB")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
