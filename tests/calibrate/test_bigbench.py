"""The pinned BIG-bench sdist: found on a package index, hash-checked, read as a tar stream,
never executed; offline once cached."""

from __future__ import annotations

import hashlib
import io
import json
import stat
import tarfile
from pathlib import Path

import pytest

from guardrail.calibrate import bigbench
from guardrail.errors import DatasetError

PREFIX = "bigbench-1.0.0/bigbench/benchmark_tasks/"


def _archive(tmp_path: Path, *, missing: str | None = None) -> tuple[Path, str]:
    """A small stand-in for the sdist: every task file, and a setup.py that leaves a mark if run."""
    path = tmp_path / bigbench.ARCHIVE
    marker = tmp_path / "setup-py-ran"
    with tarfile.open(path, "w:gz") as tar:

        def add(name: str, data: bytes) -> None:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))

        add("bigbench-1.0.0/setup.py", f"open({str(marker)!r}, 'w').write('ran')\n".encode())
        for member in bigbench.TASK_FILES:
            if member != missing:
                add(PREFIX + member, json.dumps({"examples": [{"input": member, "target": "x"}]}).encode())
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


def test_fetch_from_a_local_archive_keeps_only_task_files(tmp_path: Path) -> None:
    archive, digest = _archive(tmp_path)
    cache = tmp_path / "cache"
    folder = bigbench.fetch(cache, archive=archive, sha256=digest, log=lambda _: None)
    assert sorted(p.name for p in folder.iterdir()) == sorted(bigbench.TASK_FILES.values())
    assert not (tmp_path / "setup-py-ran").exists()
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in folder.iterdir())
    assert archive.exists()  # the user's own copy is left alone
    # cached: offline from now on (no archive, no index)
    assert bigbench.fetch(cache, index="http://127.0.0.1:9/none", log=lambda _: None) == folder


def test_fetch_refuses_a_changed_archive(tmp_path: Path) -> None:
    archive, _ = _archive(tmp_path)
    with pytest.raises(DatasetError, match="not the pinned"):
        bigbench.fetch(tmp_path / "cache", archive=archive, log=lambda _: None)
    assert not list((tmp_path / "cache" / "data" / "bigbench").glob("*.json"))


def test_fetch_names_a_missing_task_file(tmp_path: Path) -> None:
    archive, digest = _archive(tmp_path, missing="object_counting/task.json")
    with pytest.raises(DatasetError, match="holds no object_counting/task.json"):
        bigbench.fetch(tmp_path / "cache", archive=archive, sha256=digest, log=lambda _: None)


@pytest.mark.parametrize("kind", ["json", "html"])
def test_fetch_through_a_package_index(tmp_path: Path, kind: str) -> None:
    """A file:// index in both of the simple API's forms (PEP 691 JSON, PEP 503 HTML)."""
    archive, digest = _archive(tmp_path)
    project = tmp_path / "index" / "bigbench"
    project.mkdir(parents=True)
    if kind == "json":
        page = {"files": [{"filename": bigbench.ARCHIVE, "url": archive.as_uri()}]}
        (project / "index.html").write_text(json.dumps(page))
    else:
        (project / "index.html").write_text(f'<a href="{archive.as_uri()}#sha256={digest}">{bigbench.ARCHIVE}</a>')
    index = (tmp_path / "index").as_uri()
    assert bigbench.archive_url(index) == archive.as_uri()
    folder = bigbench.fetch(tmp_path / "cache", index=index, sha256=digest, log=lambda _: None)
    assert (folder / "qa_wikidata.json").is_file()


def test_fetch_offline_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="cannot reach the package index.*--archive"):
        bigbench.fetch(tmp_path / "cache", index=(tmp_path / "nowhere").as_uri(), log=lambda _: None)


def test_index_url_follows_pip(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIP_INDEX_URL", "https://mirror.example/simple/ https://other/simple")
    assert bigbench.index_url() == "https://mirror.example/simple"
