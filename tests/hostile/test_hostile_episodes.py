"""Hostile and unlucky episode files, paths and writers (the reliability sweep).

Every case ends in a clear error (a ``SchemaError`` naming the file, and the
field and step where they exist, or an ``OSError`` naming the file for a full
disk) or in correct data, in bounded time and memory, with nothing on disk
lost. Cases already covered elsewhere (truncation, empty and random files,
object arrays, member/metadata mismatches, SIGKILL of a writer) live in
tests/schema/test_schema_episode_bad_files.py and test_schema_sigkill.py.
"""

from __future__ import annotations

import errno
import io
import json
import os
import subprocess
import sys
import textwrap
import threading
import time
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from schema_testlib import (
    REPO_ROOT,
    make_steps,
    meta_doc,
    meta_npy,
    npy_bytes,
    npz_members,
    rewrite_episode,
    write_episode,
)
from teamvla_schema import (
    EpisodeWriter,
    SchemaError,
    find_episodes,
    read_episode,
    read_episode_meta,
    validate_episode_file,
    write_episode_arrays,
)
from teamvla_schema.atomic import is_temporary
from teamvla_schema.cli import main as cli_main
from teamvla_schema.zipwrite import _Member, write_zip

pytestmark = pytest.mark.timeout(30)

READERS = {
    "read_episode_meta": read_episode_meta,
    "read_episode": read_episode,
    "validate_episode_file": validate_episode_file,
}


@pytest.fixture
def good(tmp_path: Path) -> Path:
    return write_episode(tmp_path / "good", make_steps(4))


def refused(fn: Any, path: Path, match: str | None = None) -> SchemaError:
    with pytest.raises(SchemaError) as info:
        fn(path)
    assert info.value.path == str(path), str(info.value)
    if match is not None:
        assert match in str(info.value), str(info.value)
    return info.value


def leftovers(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if is_temporary(p)]


# --------------------------------------------------------------------------- zip bombs


def _npy_header(descr: str, shape: tuple[int, ...]) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buf, {"descr": descr, "fortran_order": False, "shape": shape}
    )
    return buf.getvalue()


def bomb_member(name: str, header: bytes, zeros: int, *, declared: int | None = None) -> _Member:
    """A deflated member: ``header`` then ``zeros`` zero bytes, built without inflating anything.

    A fully flushed deflate block of 1 MiB of zeros refers to nothing before it,
    so the block repeated k times is a valid stream of k MiB (about 1000:1).
    """
    mib = 1 << 20
    assert zeros % mib == 0
    head = zlib.compressobj(9, zlib.DEFLATED, -15)
    first = head.compress(header) + head.flush(zlib.Z_FULL_FLUSH)
    body = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = body.compress(bytes(mib)) + body.flush(zlib.Z_FULL_FLUSH)
    final = zlib.compressobj(9, zlib.DEFLATED, -15).flush()  # an empty final block
    crc = zlib.crc32(header)
    zero_mib = bytes(mib)
    for _ in range(zeros // mib):
        crc = zlib.crc32(zero_mib, crc)
    size = len(header) + zeros if declared is None else declared
    chunks = [first, *([block] * (zeros // mib)), final]
    return _Member(f"{name}.npy".encode(), crc, size, chunks, zipfile.ZIP_DEFLATED)


def stored_member(name: str, data: bytes) -> _Member:
    return _Member(f"{name}.npy".encode(), zlib.crc32(data), len(data), [data], zipfile.ZIP_STORED)


def write_members(path: Path, members: list[_Member]) -> Path:
    with open(path, "wb") as fh:
        write_zip(fh, members)
    return path


def test_bomb_helper_is_a_real_bomb(tmp_path: Path) -> None:
    """Sanity check: zipfile inflates the helper's member to the declared size with a valid CRC."""
    path = write_members(tmp_path / "b.npz", [bomb_member("x", b"hdr", 4 << 20)])
    with zipfile.ZipFile(path) as zf:
        data = zf.read("x.npy")
        assert zf.getinfo("x.npy").compress_size < 16 << 10
    assert len(data) == 3 + (4 << 20) and data[:3] == b"hdr" and not any(data[3:])


@pytest.mark.parametrize("declared", ["honest", "lies-small"])
def test_metadata_bomb_is_refused_before_inflating(
    tmp_path: Path, good: Path, declared: str
) -> None:
    """``__meta__`` inflating to 1 GiB: refused by the metadata size cap, without inflating it."""
    gib = 1 << 30
    header = _npy_header("|u1", (gib,))
    meta = bomb_member(
        "__meta__", header, gib, declared=None if declared == "honest" else len(header) + 100
    )
    others = [
        stored_member(n[: -len(".npy")], raw)
        for n, raw in npz_members(good).items()
        if n != "__meta__.npy"
    ]
    path = write_members(tmp_path / "bomb.npz", [meta, *others])
    assert path.stat().st_size < 4 << 20
    for name, fn in READERS.items():
        t0 = time.perf_counter()
        err = refused(fn, path)
        assert time.perf_counter() - t0 < 1.0, (name, "inflated the bomb")
        assert err.field == "__meta__", str(err)
        if declared == "honest":
            assert "metadata" in str(err) and "larger than" in str(err), str(err)


def test_array_member_bomb_is_checked_against_header_and_step_count(
    tmp_path: Path, good: Path
) -> None:
    """rgb_a's zip entry says 1 GiB but its npy header and the 4 steps imply 3 KiB: refused first."""
    header = _npy_header("|u1", (4, 8, 8, 3))
    members = npz_members(good)
    built = [
        stored_member(n[: -len(".npy")], raw) for n, raw in members.items() if n != "rgb_a.npy"
    ]
    built.append(bomb_member("rgb_a", header, 1 << 30))
    path = write_members(tmp_path / "bomb.npz", built)
    read_episode_meta(path)  # the metadata is fine, and reading it inflates no member
    for name in ("read_episode", "validate_episode_file"):
        t0 = time.perf_counter()
        err = refused(READERS[name], path)
        assert time.perf_counter() - t0 < 1.0, name
        assert err.field == "rgb_a" and "imply" in str(err), str(err)


def test_declared_step_count_that_members_cannot_hold_is_refused_from_metadata(
    tmp_path: Path, good: Path
) -> None:
    """num_steps = 10**9 in the metadata: read_episode_meta must not pass it on (callers allocate by it)."""
    doc = meta_doc(good)
    doc["num_steps"] = 10**9
    path = rewrite_episode(good, tmp_path / "liar.npz", __meta__=meta_npy(doc))
    for fn in READERS.values():
        err = refused(fn, path)
        assert "10000000" in str(err) and err.field is not None, str(err)


def test_honest_big_member_is_validated_in_bounded_memory(tmp_path: Path, good: Path) -> None:
    """A legitimately declared 512 MiB extra field: validate streams it rather than holding it."""
    rows, width = 4, 128 << 20  # 4 steps of 128 MiB each
    doc = meta_doc(good)
    doc["fields"]["blob"] = {"dtype": "uint8", "shape": [width]}
    built = [
        stored_member(n[: -len(".npy")], raw)
        for n, raw in npz_members(good).items()
        if n != "__meta__.npy"
    ]
    built += [
        stored_member("__meta__", meta_npy(doc)),
        bomb_member("blob", _npy_header("|u1", (rows, width)), rows * width),
    ]
    path = write_members(tmp_path / "big.npz", built)
    code = textwrap.dedent(
        f"""
        import resource, sys
        from teamvla_schema import validate_episode_file
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        validate_episode_file({str(path)!r})
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print((after - before) // 1024)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    grown_mib = int(out.stdout.strip())
    assert grown_mib < 200, f"validate grew RSS by {grown_mib} MiB for a 512 MiB member"


# --------------------------------------------------------------------------- member names


def _zip_raw(path: Path, members: list[tuple[str, bytes]]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        for name, data in members:
            if name in zf.NameToInfo:
                with pytest.warns(UserWarning, match="Duplicate name"):
                    zf.writestr(name, data)
            else:
                zf.writestr(name, data)
    return path


@pytest.mark.parametrize(
    "name",
    ["../evil.npy", "/abs/evil.npy", "sub/dir.npy", "back\\slash.npy", "notes.txt", "rgb_a.npy"],
    ids=["dotdot", "absolute", "subdir", "backslash", "undeclared", "duplicate"],
)
def test_unexpected_duplicate_or_traversal_member_names(
    tmp_path: Path, good: Path, name: str
) -> None:
    members = list(npz_members(good).items())
    payload = npy_bytes(np.zeros((4, 8, 8, 3), np.uint8))
    path = _zip_raw(tmp_path / "names.npz", [*members, (name, payload)])
    for fn in READERS.values():
        err = refused(fn, path, match=repr(name))
    assert "duplicate" in str(err) if name == "rgb_a.npy" else "unexpected" in str(err)
    assert not (tmp_path / "evil.npy").exists() and not Path("/abs/evil.npy").exists()


@pytest.mark.parametrize("field", ["../x", "/abs", "a/b", "", "__meta__"])
def test_field_names_in_metadata_must_be_identifiers(
    tmp_path: Path, good: Path, field: str
) -> None:
    doc = meta_doc(good)
    doc["fields"][field] = {"dtype": "uint8", "shape": []}
    members = {**npz_members(good), "__meta__.npy": meta_npy(doc)}
    if field != "__meta__":
        members[f"{field}.npy"] = npy_bytes(np.zeros(4, np.uint8))
    path = _zip_raw(tmp_path / "f.npz", list(members.items()))
    for fn in READERS.values():
        refused(fn, path)


# --------------------------------------------------------------------------- values and headers


@pytest.mark.parametrize(
    ("field", "value", "step"),
    [("action_a", np.nan, 2), ("action_b", np.inf, 0), ("grip_a", -np.inf, 3)],
)
def test_nan_and_inf_in_actions_name_field_and_step(
    tmp_path: Path, field: str, value: float, step: int
) -> None:
    ep = read_episode(write_episode(tmp_path / "src", make_steps(4)))
    arrays = dict(ep.arrays)
    bad = arrays[field].copy()
    bad[step] = value  # the low-level writer does not validate values
    arrays[field] = bad
    path = write_episode_arrays(tmp_path / "lift" / "nan.npz", ep.meta, arrays)
    read_episode(path)  # NaN is a value: reading works
    err = refused(validate_episode_file, path)
    assert (err.field, err.step) == (field, step) and "finite" in str(err)


@pytest.mark.parametrize(
    "header",
    [
        {"descr": "|u1", "fortran_order": False, "shape": (-1, 8, 8, 3)},
        {"descr": "|u1", "fortran_order": False, "shape": (4, -8, -8, 3)},
        {"descr": "|V2147483647", "fortran_order": False, "shape": (4,)},
        {"descr": [("a", "|O")], "fortran_order": False, "shape": (4,)},
    ],
    ids=["negative-steps", "negative-dims", "huge-itemsize", "object-in-struct"],
)
def test_lying_npy_headers(tmp_path: Path, good: Path, header: dict[str, Any]) -> None:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, header)
    path = rewrite_episode(good, tmp_path / "lie.npz", rgb_a=buf.getvalue() + bytes(64))
    for name in ("read_episode", "validate_episode_file"):
        err = refused(READERS[name], path)
        assert err.field == "rgb_a", str(err)


def test_huge_integer_literal_in_metadata(tmp_path: Path, good: Path) -> None:
    """Python refuses int literals over 4300 digits with a plain ValueError: it must become a SchemaError."""
    text = json.dumps(meta_doc(good)).replace('"num_steps": 4', '"num_steps": 1' + "0" * 5000)
    assert "0" * 5000 in text
    path = rewrite_episode(good, tmp_path / "int.npz", __meta__=meta_npy(text))
    for fn in READERS.values():
        err = refused(fn, path)
        assert err.field == "__meta__", str(err)


# --------------------------------------------------------------------------- odd paths


def test_symlink_to_an_episode_is_followed(tmp_path: Path, good: Path) -> None:
    """Decision: an episode file that is a symlink is followed (symlink farms are a normal way to assemble datasets)."""
    root = tmp_path / "farm"
    (root / "lift").mkdir(parents=True)
    link = root / "lift" / "linked.npz"
    link.symlink_to(good)
    for fn in READERS.values():
        header = fn(link)
        header = header if not hasattr(header, "header") else header.header
        assert header.path == link and header.meta.task == "lift"
    assert find_episodes(root) == [link]
    assert cli_main(["validate", str(root)]) == 0


@pytest.mark.parametrize("kind", ["loop", "dangling", "fifo", "directory"])
def test_odd_entries_are_refused_quickly_and_listed_by_scanners(
    tmp_path: Path, good: Path, kind: str, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "root"
    (root / "lift").mkdir(parents=True)
    os.link(good, root / "lift" / "fine.npz")
    odd = root / "lift" / "odd.npz"
    if kind == "loop":
        other = root / "lift" / "other.npz"
        odd.symlink_to(other)
        other.symlink_to(odd)
        match = "symbolic links"
    elif kind == "dangling":
        odd.symlink_to(root / "gone.npz")
        match = "No such file"
    elif kind == "fifo":
        os.mkfifo(odd)
        match = "not a regular file (a FIFO)"
    else:
        odd.mkdir()
        match = "not a regular file (a directory)"
    for fn in READERS.values():
        refused(fn, odd, match=match)
    if kind == "directory":
        assert find_episodes(root) == [root / "lift" / "fine.npz"]  # a directory is walked
        return
    found = find_episodes(root)
    assert odd in found, "a scanner silently skipped a bad entry"
    if kind == "loop":
        assert root / "lift" / "other.npz" in found
    capsys.readouterr()
    assert cli_main(["validate", str(root)]) == 1
    out = capsys.readouterr().out
    assert f"BAD  {odd}" in out and match in out, out


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="needs /dev/zero")
def test_dev_zero_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    dev = Path("/dev/zero")
    for fn in READERS.values():
        refused(fn, dev, match="not a regular file (a character device)")
    with pytest.raises(SchemaError, match="character device"):
        find_episodes(dev)
    assert cli_main(["validate", str(dev)]) == 2
    assert cli_main(["inspect", str(dev)]) == 2
    err = capsys.readouterr().err
    assert err.count("character device") == 2, err


def test_fifo_as_root_or_inspect_argument(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fifo = tmp_path / "pipe.npz"
    os.mkfifo(fifo)
    with pytest.raises(SchemaError, match="FIFO") as info:
        find_episodes(fifo)
    assert info.value.path == str(fifo)
    assert cli_main(["validate", str(fifo)]) == 2
    assert cli_main(["inspect", str(fifo)]) == 2
    err = capsys.readouterr().err
    assert err.count("FIFO") == 2 and str(fifo) in err, err


def test_symlink_loop_of_directories_inside_a_root(tmp_path: Path, good: Path) -> None:
    root = tmp_path / "root"
    (root / "lift").mkdir(parents=True)
    os.link(good, root / "lift" / "a.npz")
    (root / "lift" / "again").symlink_to(root / "lift")  # a loop
    (root / "alias").symlink_to(root / "lift")  # the same directory twice
    t0 = time.perf_counter()
    found = find_episodes(root)
    assert time.perf_counter() - t0 < 1.0
    assert found == [root / "lift" / "a.npz"]  # real directories win over symlinked aliases


def _deny(monkeypatch: pytest.MonkeyPatch, *denied: Path) -> None:
    """Simulate unreadable directories (as root, chmod does not stop reads)."""
    real = os.scandir
    names = {str(p) for p in denied}

    def scandir(path: Any = ".") -> Any:
        if os.fspath(path) in names:
            raise PermissionError(errno.EACCES, "Permission denied", os.fspath(path))
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)


def test_unreadable_directory_under_a_root_is_reported(
    tmp_path: Path, good: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "root"
    for task in ("drawer", "lift"):
        (root / task).mkdir(parents=True)
        os.link(good, root / task / f"{task}.npz")
    _deny(monkeypatch, root / "drawer")
    with pytest.raises(SchemaError, match="Permission denied") as info:
        find_episodes(root)
    assert info.value.path == str(root / "drawer")
    capsys.readouterr()
    assert cli_main(["validate", str(root)]) == 1  # reported, and the rest still checked
    out = capsys.readouterr().out
    assert f"BAD  {root / 'drawer'}" in out and "Permission denied" in out, out
    assert "1 episode file(s) checked, 1 ok, 0 bad" in out and "1 unreadable director" in out


# --------------------------------------------------------------------------- concurrent writers


def _record(writer: EpisodeWriter, meta: dict[str, Any], steps: int = 3) -> None:
    writer.start_episode(meta)
    for step in make_steps(steps):
        writer.add_step(step)


def test_two_writers_interleaved_get_unique_ids(tmp_path: Path) -> None:
    """Both writers pick lift-000000 at start; the second to finish must not lose its episode."""
    one, two = EpisodeWriter(tmp_path), EpisodeWriter(tmp_path)
    _record(one, {"task": "lift", "user": {"writer": 1}})
    _record(two, {"task": "lift", "user": {"writer": 2}})
    first, second = one.end_episode(), two.end_episode()
    assert first != second and sorted(p.name for p in find_episodes(tmp_path)) == [
        "lift-000000.npz",
        "lift-000001.npz",
    ]
    assert read_episode_meta(first).meta.user == {"writer": 1}
    header = validate_episode_file(second)
    assert header.meta.user == {"writer": 2} and header.meta.episode_id == second.stem
    assert not leftovers(tmp_path)


def test_generated_id_taken_between_choosing_and_starting_is_no_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The race the thread test hits now and then: another writer publishes the id just chosen."""
    other = EpisodeWriter(tmp_path)
    writer = EpisodeWriter(tmp_path)
    choose = EpisodeWriter._next_episode_id
    raced = []

    def chosen_then_taken(self: EpisodeWriter, task: str) -> str:
        episode_id = choose(self, task)
        if self is writer and not raced:  # another writer finishes that very id first, once
            raced.append(episode_id)
            _record(other, {"task": task, "episode_id": episode_id, "user": {"writer": "other"}})
            other.end_episode()
        return episode_id

    monkeypatch.setattr(EpisodeWriter, "_next_episode_id", chosen_then_taken)
    _record(writer, {"task": "lift", "user": {"writer": "mine"}})  # raised "already exists" before
    mine = writer.end_episode()
    names = sorted(p.name for p in find_episodes(tmp_path))
    assert names == ["lift-000000.npz", "lift-000001.npz"] and mine.name == "lift-000001.npz"
    assert validate_episode_file(mine).meta.user["writer"] == "mine"


def test_writers_in_threads_never_overwrite_or_lose_episodes(tmp_path: Path) -> None:
    threads, per = 4, 5
    barrier = threading.Barrier(threads)
    errors: list[BaseException] = []

    def work(k: int) -> None:
        try:
            writer = EpisodeWriter(tmp_path)
            barrier.wait()
            for i in range(per):
                _record(writer, {"task": "lift", "user": {"writer": k, "seq": i}}, steps=2)
                writer.end_episode()
        except BaseException as exc:  # reported below
            errors.append(exc)

    pool = [threading.Thread(target=work, args=(k,)) for k in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(timeout=30)
    assert not errors, errors
    files = find_episodes(tmp_path)
    users = sorted(
        (h.meta.user["writer"], h.meta.user["seq"]) for h in map(validate_episode_file, files)
    )
    assert users == [(k, i) for k in range(threads) for i in range(per)]
    assert len({p.name for p in files}) == threads * per and not leftovers(tmp_path)


_PROC_WRITER = textwrap.dedent(
    """
    import sys, time
    sys.path.insert(0, {schema_tests!r})
    from schema_testlib import make_steps
    from teamvla_schema import EpisodeWriter
    root, k, start = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    steps = make_steps(2)
    while time.time() < start:
        time.sleep(0.001)
    with EpisodeWriter(root) as w:
        for i in range(6):
            w.start_episode({{"task": "lift", "user": {{"writer": k, "seq": i}}}})
            for s in steps:
                w.add_step(s)
            w.end_episode()
    """
).format(schema_tests=str(REPO_ROOT / "tests" / "schema"))


def test_writers_in_processes_never_overwrite_or_lose_episodes(tmp_path: Path) -> None:
    start = time.time() + 1.0  # both processes begin writing at the same moment
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _PROC_WRITER, str(tmp_path), str(k), str(start)],
            stderr=subprocess.PIPE,
            text=True,
        )
        for k in range(2)
    ]
    for p in procs:
        _, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
    users = sorted(
        (h.meta.user["writer"], h.meta.user["seq"])
        for h in map(validate_episode_file, find_episodes(tmp_path))
    )
    assert users == [(k, i) for k in range(2) for i in range(6)]
    assert not leftovers(tmp_path)


def test_explicit_id_collision_is_a_clear_error_and_keeps_the_first_file(tmp_path: Path) -> None:
    one, two = EpisodeWriter(tmp_path), EpisodeWriter(tmp_path)
    _record(one, {"task": "lift", "episode_id": "same", "user": {"writer": 1}})
    _record(two, {"task": "lift", "episode_id": "same", "user": {"writer": 2}})
    path = one.end_episode()
    before = path.read_bytes()
    with pytest.raises(SchemaError, match="already exists") as info:
        two.end_episode()
    assert info.value.path == str(path)
    assert path.read_bytes() == before and not leftovers(tmp_path)
    assert two.in_episode  # nothing recorded is thrown away; the caller decides
    two.discard_episode()


# --------------------------------------------------------------------------- full disk


class _FillsUp:
    """A file wrapper that accepts ``room`` bytes, then fails like a full disk."""

    def __init__(self, fh: Any, room: int, err: int = errno.ENOSPC) -> None:
        self.fh, self.room, self.err = fh, room, err

    def write(self, data: Any) -> int:
        n = memoryview(data).nbytes
        if n > self.room:
            self.fh.write(memoryview(data).cast("B")[: self.room])
            self.room = 0
            raise OSError(self.err, os.strerror(self.err))
        self.room -= n
        return self.fh.write(data)


def test_disk_full_mid_write_keeps_the_previous_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import teamvla_schema.episode as episode_mod

    writer = EpisodeWriter(tmp_path, overwrite=True)
    _record(writer, {"task": "lift", "episode_id": "e", "user": {"v": 1}})
    path = writer.end_episode()
    before = path.read_bytes()
    real = episode_mod.write_zip
    monkeypatch.setattr(episode_mod, "write_zip", lambda fh, m: real(_FillsUp(fh, 1000), m))
    _record(writer, {"task": "lift", "episode_id": "e", "user": {"v": 2}}, steps=6)
    with pytest.raises(OSError) as info:
        writer.end_episode()
    assert info.value.errno == errno.ENOSPC and str(path) in str(info.value)
    assert path.read_bytes() == before and not leftovers(tmp_path)
    assert writer.in_episode and writer.num_steps == 6  # the recording is kept: retry later
    monkeypatch.undo()  # space was freed
    assert writer.end_episode() == path
    assert validate_episode_file(path).meta.user == {"v": 2}


_FSIZE_WRITER = textwrap.dedent(
    """
    import errno, json, resource, signal, sys
    import numpy as np
    sys.path.insert(0, {schema_tests!r})
    from schema_testlib import make_steps
    from teamvla_schema import EpisodeWriter
    root, mode = sys.argv[1], sys.argv[2]
    rng = np.random.default_rng(0)
    steps = [dict(s, rgb_a=rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)) for s in make_steps(40, h=64, w=64)]
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (64 << 10, 64 << 10))
    w = EpisodeWriter(root, overwrite=True)
    w.start_episode({{"task": "lift", "episode_id": "old" if mode == "overwrite" else "new"}})
    for s in steps:
        w.add_step(s)
    try:
        w.end_episode()
    except OSError as exc:
        print(json.dumps({{"errno": exc.errno, "text": str(exc)}}))
    else:
        print(json.dumps({{"errno": 0}}))
    """
).format(schema_tests=str(REPO_ROOT / "tests" / "schema"))


@pytest.mark.parametrize("mode", ["overwrite", "new"])
def test_file_size_limit_while_writing_leaves_no_half_file(tmp_path: Path, mode: str) -> None:
    """RLIMIT_FSIZE (with SIGXFSZ ignored) makes writes fail with EFBIG, like a full disk."""
    old = write_episode(tmp_path, make_steps(2), {"task": "lift", "episode_id": "old"})
    before = old.read_bytes()
    out = subprocess.run(
        [sys.executable, "-c", _FSIZE_WRITER, str(tmp_path), mode],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["errno"] == errno.EFBIG and "lift/" in result["text"], result
    assert old.read_bytes() == before
    assert find_episodes(tmp_path) == [old] and not leftovers(tmp_path)


# --------------------------------------------------------------------------- sanity


def test_regular_reads_still_work_through_every_entry(tmp_path: Path, good: Path) -> None:
    """The checks above must not refuse ordinary files: compressed, stored, re-zipped, numpy.savez-made."""
    plain = write_episode(tmp_path / "plain", make_steps(3), compress=False)
    assert validate_episode_file(good).meta.num_steps == 4
    assert validate_episode_file(plain).meta.num_steps == 3
    assert read_episode_meta(good).file_size == os.stat(good).st_size
    members = npz_members(good)
    rezipped = tmp_path / "rezipped.npz"
    with zipfile.ZipFile(rezipped, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    assert validate_episode_file(rezipped).meta.num_steps == 4
    ep = read_episode(good)
    saved = tmp_path / "savez.npz"
    meta = np.load(io.BytesIO(members["__meta__.npy"]), allow_pickle=False)
    np.savez_compressed(saved, __meta__=meta, **ep.arrays)
    got = read_episode(saved)
    assert all((got.arrays[k] == v).all() for k, v in ep.arrays.items())
    assert validate_episode_file(saved).meta == ep.meta
