"""Private cache files, safe names and bounded reads."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from guardrail.calibrate.files import private_dir, private_file, read_json_bounded, read_lines, safe_component, within
from guardrail.errors import DatasetError, InvalidInputError


@pytest.mark.parametrize(
    ("name", "expected"),
    [("../../x", "_.._x"), ("SmolLM2-135M", "SmolLM2-135M"), ("a/b\\c d", "a_b_c_d"), ("...", "data"), ("", "data")],
)
def test_safe_component(name: str, expected: str) -> None:
    assert safe_component(name) == expected
    assert "/" not in safe_component(name) and not safe_component(name).startswith(".")


def test_within_refuses_paths_outside(tmp_path: Path) -> None:
    assert within(tmp_path, tmp_path / "a" / "b") == tmp_path / "a" / "b"
    with pytest.raises(DatasetError, match="outside the cache"):
        within(tmp_path / "cache", tmp_path / "cache" / ".." / "x")


def test_private_dirs_and_files(tmp_path: Path) -> None:
    folder = private_dir(tmp_path / "a" / "b")
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "a").stat().st_mode) == 0o700
    with private_file(folder / "f.jsonl", "a") as out:
        out.write("x\n")
    with private_file(folder / "f.bin", "wb") as out:
        out.write(b"\x00")
    assert stat.S_IMODE((folder / "f.jsonl").stat().st_mode) == 0o600
    assert stat.S_IMODE((folder / "f.bin").stat().st_mode) == 0o600
    loose = tmp_path / "loose"
    loose.mkdir(mode=0o755)
    private_dir(loose)
    assert stat.S_IMODE(loose.stat().st_mode) == 0o700


def test_read_lines_bounds(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_bytes(b"short\n" + b"x" * 100 + b"\nend")
    assert list(read_lines(path, max_line=200)) == ["short", "x" * 100, "end"]
    with pytest.raises(InvalidInputError, match="line 2 is longer than 50 bytes"):
        list(read_lines(path, max_line=50))
    path.write_bytes(b"ok\n\xff\xfe\n")
    with pytest.raises(InvalidInputError, match="line 2 is not UTF-8"):
        list(read_lines(path))
    with pytest.raises(DatasetError, match="larger than 3 bytes"):
        list(read_lines(path, max_file=3))


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")
def test_read_lines_refuses_a_fifo_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.jsonl"
    os.mkfifo(fifo)
    with pytest.raises(DatasetError, match="not a regular file"):
        list(read_lines(fifo))
    with pytest.raises(DatasetError, match="not a regular file"):
        list(read_lines(Path("/dev/zero")))


def test_read_json_bounded() -> None:
    assert read_json_bounded('{"a": [1, {"b": "[[["}]}', "row") == {"a": [1, {"b": "[[["}]}
    assert read_json_bounded('["\\"[[[["]', "row") == ['"[[[[']
    with pytest.raises(InvalidInputError, match="row is nested deeper than 32 levels"):
        read_json_bounded("[" * 100_000 + "]" * 100_000, "row")
    with pytest.raises(InvalidInputError, match="row is not JSON"):
        read_json_bounded("{nope", "row")
    with pytest.raises(InvalidInputError, match="row is not JSON"):  # bug: a raw ValueError (int conversion limit)
        read_json_bounded('{"n": ' + "9" * 5000 + "}", "row")
