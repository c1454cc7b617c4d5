"""Simulator figures: renderer frames/s, environment steps/s, generator episodes/s, expert success rates.

Prints, in one run:
  (a) renderer frames/s at 96x96 in this single process (one frame = one camera
      image), side by side with a naive baseline renderer written here: a
      full-image mask per primitive (every pixel tested against every block,
      link and finger), the obvious numpy approach; target >= 2,000 frames/s;
  (b) environment steps/s (physics + both cameras) and the scripted experts' cost;
  (c) generate_dataset episodes/s with 1 and 2 worker processes (96x96, real
      EpisodeWriter, compressed files);
  (d) each expert's success rate and episode length over 100 evaluation seeds;
  (e) the batched worlds (make_vector_env, numpy lock step) against stepping a
      list of BimanualEnv with the same actions, both observation modes.

Wall-clock rates are reported with the CPU time of this process next to them
(other programs sharing the cores slow the first, not the second).

    uv run python benchmarks/bench_sim.py            # full run
    uv run python benchmarks/bench_sim.py --quick    # small, for a smoke test
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from teamvla_data.sim import (
    TASKS,
    BimanualEnv,
    WorldConfig,
    eval_seeds,
    expert_rng,
    generate_dataset,
    make_expert,
    make_vector_env,
    run_expert,
)
from teamvla_data.sim.layout import LAYOUT
from teamvla_data.sim.render import (
    BACKGROUND,
    BLOCK_COLORS,
    CABINET,
    FINGER_LENGTH,
    FINGER_RADIUS,
    GRIPPER_COLORS,
    HANDLE,
    LINK_COLORS,
    LINK_RADIUS,
    PALM_CLOSED,
    PALM_OPEN,
    TABLE,
    TRAY,
)
from teamvla_data.sim.world import ARM_A, ARM_B, WorldState, to_world


class NaiveRenderer:
    """Baseline: one full-image boolean mask per primitive (point-to-segment distance for every pixel)."""

    def __init__(self, model, size: int) -> None:
        self.model, self.size = model, size
        step = LAYOUT.view_width / size
        centres = (np.arange(size) + 0.5) * step
        self.z = (LAYOUT.view_z0 + LAYOUT.view_width - centres)[:, None] * np.ones((1, size))
        self.xs = [
            (x0 + centres)[None, :] * np.ones((size, 1))
            for x0 in (LAYOUT.camera_a_x0, LAYOUT.camera_b_x0)
        ]

    def _rect(self, img, x, x0, x1, z0, z1, color):
        img[(x >= x0) & (x < x1) & (self.z >= z0) & (self.z < z1)] = color

    def _capsule(self, img, x, p0, p1, radius, color):
        d = p1 - p0
        t = np.clip(
            ((x - p0[0]) * d[0] + (self.z - p0[1]) * d[1]) / max(float(d @ d), 1e-12), 0.0, 1.0
        )
        img[(x - p0[0] - t * d[0]) ** 2 + (self.z - p0[1] - t * d[1]) ** 2 <= radius * radius] = (
            color
        )

    def render(self, state: WorldState):
        lay, out = LAYOUT, []
        for x in self.xs:
            img = np.empty((self.size, self.size, 3), np.uint8)
            img[:] = BACKGROUND
            self._rect(img, x, -9, 9, -9, 0, TABLE)
            if state.has_drawer:
                front = lay.tray_front(state.drawer)
                self._rect(img, x, lay.cabinet_x0, lay.cabinet_x1, 0, lay.cabinet_height, CABINET)
                self._rect(img, x, lay.cabinet_x1, front, 0, lay.tray_floor, TRAY)
                self._rect(
                    img, x, front, front + lay.handle_width, lay.handle_z0, lay.handle_z1, HANDLE
                )
            h = lay.block_half
            for (bx, bz), color in zip(state.block_pos, BLOCK_COLORS.values(), strict=True):
                self._rect(img, x, bx - h, bx + h, bz - h, bz + h, color)
            for arm in (ARM_A, ARM_B):
                pts = to_world(arm, self.model.joint_points(state.q[arm]))
                for i in range(len(pts) - 2):
                    self._capsule(img, x, pts[i], pts[i + 1], LINK_RADIUS, LINK_COLORS[arm][i % 2])
                u = (pts[-1] - pts[-2]) / self.model.grip_offset
                v = np.array([-u[1], u[0]])
                half = PALM_OPEN + (PALM_CLOSED - PALM_OPEN) * float(state.grip[arm])
                left, right = pts[-2] + half * v, pts[-2] - half * v
                for p0, p1 in (
                    (left, right),
                    (left, left + FINGER_LENGTH * u),
                    (right, right + FINGER_LENGTH * u),
                ):
                    self._capsule(img, x, p0, p1, FINGER_RADIUS, GRIPPER_COLORS[arm])
            out.append(img)
        return out[0], out[1]


def timed(fn, repeat: int) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of ``repeat`` calls."""
    w, c = time.perf_counter(), time.process_time()
    for _ in range(repeat):
        fn()
    return time.perf_counter() - w, time.process_time() - c


def sample_states(n_per_task: int) -> list[WorldState]:
    """States from expert episodes of every task (arms in varied poses, drawer open and shut)."""
    env = BimanualEnv(WorldConfig(render=False))
    states = []
    for task in TASKS:
        for seed in range(n_per_task):
            env.reset(task, seed)
            expert = make_expert(task, expert_rng(seed))
            done = False
            while not done:
                states.append(env.state.copy())
                _, _, done, _ = env.step(expert.act(env))
    return states


def bench_render(size: int, frames: int) -> None:
    states = sample_states(2)
    env = BimanualEnv(WorldConfig(image_size=size))
    fast, naive = env.renderer, NaiveRenderer(env.model, size)
    ours = fast.render(states[len(states) // 2])
    ref = naive.render(states[len(states) // 2])
    agree = np.mean(np.all(ours[0] == ref[0], axis=-1))
    print(
        f"\n(a) renderer, {size}x{size}, one process (one frame = one camera image); pixels agreeing with baseline: {agree:.1%}"
    )
    print(f"    {'renderer':<34} {'frames/s (wall)':>16} {'frames/s (CPU)':>15}")
    for name, r, n in (
        ("naive: full-image mask per primitive", naive, max(20, frames // 20)),
        ("teamvla_data.sim.render.Renderer", fast, frames),
    ):
        it = iter(states * (n // len(states) + 1))
        wall, cpu = timed(lambda r=r, it=it: r.render(next(it)), n)
        print(f"    {name:<34} {2 * n / wall:>16,.0f} {2 * n / cpu:>15,.0f}")
    print("    target (issue 4)                                 >= 2,000")


def bench_env(steps: int) -> None:
    print(f"\n(b) environment, 96x96, one process, expert episodes until {steps} steps per task")
    print(
        f"    {'task':<8} {'env.step/s (render)':>20} {'env.step/s (no render)':>23} {'expert.act/s':>13}"
    )
    for task in TASKS:
        step_rates, t_act, n_act = [], 0.0, 0
        for render in (True, False):
            env = BimanualEnv(WorldConfig(render=render))
            t_step, n, seed = 0.0, 0, 0
            while n < steps:
                env.reset(task, seed)
                expert = make_expert(task, expert_rng(seed))
                done = False
                while not done:
                    t0 = time.perf_counter()
                    action = expert.act(env)
                    t1 = time.perf_counter()
                    _, _, done, _ = env.step(action)
                    t_step += time.perf_counter() - t1
                    t_act += t1 - t0
                    n += 1
                    n_act += 1
                seed += 1
            step_rates.append(n / t_step)
        print(
            f"    {task:<8} {step_rates[0]:>20,.0f} {step_rates[1]:>23,.0f} {n_act / t_act:>13,.0f}"
        )


def bench_generate(episodes_per_task: int) -> None:
    n = episodes_per_task * len(TASKS)
    print(
        f"\n(c) generate_dataset, 96x96, {n} episodes ({episodes_per_task} per task), compressed .npz files"
    )
    print(f"    {'workers':<8} {'episodes/s (wall)':>18} {'seconds':>8} {'MiB written':>12}")
    tmp = Path(tempfile.mkdtemp(prefix="bench_sim_"))
    try:
        for workers in (1, 2):
            root = tmp / f"w{workers}"
            t0 = time.perf_counter()
            paths = generate_dataset(
                root,
                TASKS,
                episodes_per_task,
                seed=0,
                workers=workers,
                image_size=96,
                progress=False,
            )
            wall = time.perf_counter() - t0
            size = sum(p.stat().st_size for p in paths) / 2**20
            print(f"    {workers:<8} {n / wall:>18.1f} {wall:>8.1f} {size:>12.1f}")
        same = all(
            (tmp / "w1" / p.relative_to(tmp / "w2")).read_bytes() == p.read_bytes()
            for p in (tmp / "w2").rglob("*.npz")
        )
        print(f"    files identical for 1 and 2 workers: {same}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def bench_experts(seeds: int) -> None:
    print(f"\n(d) scripted experts over {seeds} evaluation seeds per task (render off)")
    print(
        f"    {'task':<8} {'success':>8} {'steps mean':>11} {'min':>4} {'max':>4} {'step limit':>11}"
    )
    env = BimanualEnv(WorldConfig(render=False))
    for task in TASKS:
        wins, lengths = 0, []
        for seed in eval_seeds(task, seeds):
            steps = list(run_expert(env, task, seed))
            wins += steps[-1]["success"]
            lengths.append(len(steps) - 1)
        limit = env.task_cfgs[task].max_steps
        print(
            f"    {task:<8} {wins / seeds:>8.1%} {np.mean(lengths):>11.1f} {min(lengths):>4} {max(lengths):>4} {limit:>11}"
        )


def bench_vector(sizes: tuple[int, ...], steps: int) -> None:
    print(
        f"\n(e) batched worlds, 96x96, {steps} steps of random joint-target actions, tasks round-robin"
    )
    print(
        f"    {'obs_mode':<8} {'num_envs':>8} {'vector env steps/s':>19} {'list of envs steps/s':>21} {'speed-up':>9}"
    )
    for obs_mode in ("state", "pixels"):
        for n in sizes if obs_mode == "state" else sizes[:2]:
            vec = make_vector_env(list(TASKS), n, obs_mode=obs_mode, image_size=96)
            vec.reset(seed=0)
            rng = np.random.default_rng(0)
            q = vec.state.q.astype(np.float32)
            actions = [
                {
                    "action_a": q[:, ARM_A]
                    + rng.uniform(-0.1, 0.1, q[:, ARM_A].shape).astype(np.float32),
                    "action_b": q[:, ARM_B]
                    + rng.uniform(-0.1, 0.1, q[:, ARM_B].shape).astype(np.float32),
                    "grip_a": (rng.random(n) < 0.5).astype(np.float32),
                    "grip_b": (rng.random(n) < 0.5).astype(np.float32),
                }
                for _ in range(steps)
            ]
            t0 = time.perf_counter()
            for a in actions:
                vec.step(a)
            t_vec = time.perf_counter() - t0
            envs = [BimanualEnv(WorldConfig(render=obs_mode == "pixels")) for _ in range(n)]
            for i, env in enumerate(envs):
                env.reset(TASKS[i % len(TASKS)], i)
            t0 = time.perf_counter()
            for a in actions:
                for i, env in enumerate(envs):
                    env.step({k: v[i] for k, v in a.items()})
            t_list = time.perf_counter() - t0
            print(
                f"    {obs_mode:<8} {n:>8} {n * steps / t_vec:>19,.0f} {n * steps / t_list:>21,.0f} {t_list / t_vec:>8.1f}x"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke test")
    args = parser.parse_args()
    q = args.quick
    bench_render(96, 400 if q else 10_000)
    bench_env(100 if q else 1_000)
    bench_generate(2 if q else 20)
    bench_experts(10 if q else 100)
    bench_vector((8, 64) if q else (8, 64, 256), 10 if q else 50)
    print("\nnumbers vary with the machine and its load")


if __name__ == "__main__":
    main()
