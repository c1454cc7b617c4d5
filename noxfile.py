"""Nox sessions: one per package (installs only that package and its declared
dependencies), lint, typecheck, a wheel smoke test as Track A would install,
and `all` (everything together). Runs with the uv backend: `uvx nox -s schema`.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import nox

nox.options.default_venv_backend = "uv"
nox.options.sessions = ["lint", "typecheck", "schema", "data", "train", "wheel"]
nox.options.reuse_existing_virtualenvs = True

ROOT = Path(__file__).parent
TEST_DEPS = ["pytest>=8", "pytest-timeout>=2.3", "hypothesis>=6.100", "safetensors>=0.4"]

# package -> (local paths to install, import smoke test, test folder)
PACKAGES = {
    "schema": (
        ["packages/teamvla-schema"],
        "import teamvla_schema, teamvla_schema.cli",
        "tests/schema",
    ),
    "data": (
        ["packages/teamvla-schema", "packages/teamvla-data[torch]"],
        "import teamvla_data, teamvla_data.cli",
        "tests/data",
    ),
    "train": (
        ["packages/teamvla-schema", "packages/teamvla-data[torch]", "packages/teamvla-train"],
        "import teamvla_train, teamvla_train.cli",
        "tests/train",
    ),
}

NO_TORCH = "import importlib.util, sys; sys.exit('torch is installed here' if importlib.util.find_spec('torch') else 0)"


def _install_and_test(session: nox.Session, package: str) -> None:
    paths, smoke, tests = PACKAGES[package]
    session.install(*paths, *TEST_DEPS)
    session.run("python", "-c", smoke)
    session.run("teamvla", "--help", silent=True)
    if package == "schema":
        # Track A installs teamvla-schema alone: prove torch never came along.
        session.run("python", "-c", NO_TORCH)
    session.run("pytest", tests, "tests/test_imports.py", *session.posargs)


@nox.session(name="schema")
def schema(session: nox.Session) -> None:
    """teamvla-schema alone, in an environment without torch."""
    _install_and_test(session, "schema")


@nox.session(name="data")
def data(session: nox.Session) -> None:
    """teamvla-data with its torch extra."""
    _install_and_test(session, "data")


@nox.session(name="train")
def train(session: nox.Session) -> None:
    """teamvla-train (and what it depends on)."""
    _install_and_test(session, "train")


@nox.session
def lint(session: nox.Session) -> None:
    """ruff lint and format check."""
    session.install("ruff>=0.6")
    session.run("ruff", "check", "packages", "tests", "benchmarks", "scripts", "noxfile.py")
    session.run(
        "ruff", "format", "--check", "packages", "tests", "benchmarks", "scripts", "noxfile.py"
    )


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy over every package's sources."""
    session.install(
        "packages/teamvla-schema",
        "packages/teamvla-data[torch]",
        "packages/teamvla-train",
        "mypy>=1.10",
        "types-PyYAML",
    )
    session.run(
        "mypy",
        "packages/teamvla-schema/src/teamvla_schema",
        "packages/teamvla-data/src/teamvla_data",
        "packages/teamvla-train/src/teamvla_train",
    )


@nox.session
def wheel(session: nox.Session) -> None:
    """Build every package's wheel and sdist; install the schema wheel with plain pip, as Track A would."""
    session.install("uv")
    with tempfile.TemporaryDirectory() as tmp:
        dist = Path(tmp) / "dist"
        for name in ("teamvla-schema", "teamvla-data", "teamvla-train"):
            session.run("uv", "build", "--package", name, "--out-dir", str(dist), silent=True)
        built = sorted(p.name for p in dist.iterdir())
        session.log(f"built: {built}")
        for name in ("teamvla_schema", "teamvla_data", "teamvla_train"):
            if not any(b.startswith(name) and b.endswith(".whl") for b in built):
                session.error(f"no wheel for {name}")
            if not any(b.startswith(name) and b.endswith(".tar.gz") for b in built):
                session.error(f"no sdist for {name}")
        venv = Path(tmp) / "track-a"
        session.run("python", "-m", "venv", str(venv), external=True)
        py = str(venv / "bin" / "python")
        (wheel_path,) = dist.glob("teamvla_schema-*.whl")
        session.run(py, "-m", "pip", "install", "--quiet", str(wheel_path), external=True)
        session.run(py, "-c", NO_TORCH, external=True)
        session.run(
            py,
            "-c",
            "import sys, teamvla_schema; from teamvla_schema import EpisodeWriter, load_checkpoint; "
            "assert 'torch' not in sys.modules; print('teamvla-schema', teamvla_schema.__version__, 'ok')",
            external=True,
        )
        session.run(str(venv / "bin" / "teamvla"), "--help", external=True, silent=True)
        # README: a package that depends on another of ours installs from the same dist/.
        session.run(
            py, "-m", "pip", "install", "--quiet", "--find-links", str(dist), "teamvla-data",
            external=True,
        )  # fmt: skip
        session.run(
            py,
            "-c",
            "import sys, teamvla_data; from teamvla_data import MultiTaskDataset; "
            "assert 'torch' not in sys.modules; print('teamvla-data', teamvla_data.__version__, 'ok')",
            external=True,
        )
        session.run(py, "-c", NO_TORCH, external=True)
        session.run(str(venv / "bin" / "teamvla"), "--version", external=True)


@nox.session(name="all")
def all_(session: nox.Session) -> None:
    """The whole suite with every package installed together."""
    session.install(
        "packages/teamvla-schema",
        "packages/teamvla-data[torch]",
        "packages/teamvla-train",
        *TEST_DEPS,
    )
    session.run("pytest", *session.posargs)


# The real libraries the converters (teamvla_data.interop) are checked against. Pinned: the
# newest releases on PyPI when this session was written. Not in nox.options.sessions: it
# installs PyTorch and takes minutes.
LEROBOT = "lerobot==0.4.4"
ROBOMIMIC = "robomimic==0.3.0"
# LeRobot 0.4.4's recording API turns (1,)-shaped features into floats with float(array),
# which numpy 2.4 refuses ("only 0-dimensional arrays can be converted to Python scalars").
INTEROP_NUMPY = "numpy>=1.24,<2.4"


@nox.session
def interop(session: nox.Session) -> None:
    """teamvla convert against the real LeRobot and robomimic (`uvx nox -s interop`).

    LeRobot decodes video with its "pyav" backend here (PyAV's wheels bundle FFmpeg's
    libraries); its default, torchcodec, needs a system FFmpeg. `-- --make-fixtures`
    rewrites tests/fixtures/interop with these libraries instead of testing.
    """
    session.install(
        "packages/teamvla-schema",
        "packages/teamvla-data[lerobot,robomimic]",
        LEROBOT,
        ROBOMIMIC,
        INTEROP_NUMPY,
        *TEST_DEPS,
    )
    with tempfile.TemporaryDirectory() as hf_home:
        # Local files only: no hub downloads, and the datasets cache stays out of $HOME.
        env = {"HF_HOME": hf_home, "HF_HUB_OFFLINE": "1", "TEAMVLA_INTEROP_REAL": "1"}
        if "--make-fixtures" in session.posargs:
            session.run(
                "python", "scripts/make_interop_fixtures.py", "tests/fixtures/interop", env=env
            )
            return
        session.run(
            "python",
            "-c",
            "import lerobot, robomimic, av; from importlib.metadata import version as v; "
            "print('lerobot', v('lerobot'), 'robomimic', v('robomimic'), 'av', av.__version__)",
        )
        session.run("pytest", "tests/interop", *session.posargs, env=env)
