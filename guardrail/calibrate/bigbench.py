"""BIG-bench task files, fetched once from the ``bigbench==1.0.0`` sdist and never built.

The sdist (358 MB, Apache-2.0) is the only place PyPI carries BIG-bench's task files. It is
found on the package index pip is configured with (``$PIP_INDEX_URL``, pip's
``global.index-url``, else PyPI), through the index's own API (PEP 691 JSON, or the PEP 503
HTML page), downloaded once, checked against the pinned SHA-256 below, and read as a tar
stream: only the task files listed in :data:`TASK_FILES` are copied into the user cache, then
the archive is deleted. Nothing in the archive is executed (its ``setup.py`` never runs: pip
is not asked to download it, because ``pip download`` prepares an sdist's metadata by running
it). After the fetch everything is offline.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.parse
import urllib.request
from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path

from guardrail.calibrate.files import private_dir, private_file
from guardrail.errors import DatasetError
from guardrail.loading import cache_root

__all__ = ["ARCHIVE", "ARCHIVE_SHA256", "FETCH_COMMAND", "TASK_FILES", "fetch", "index_url", "task_file"]

PROJECT = "bigbench"
ARCHIVE = "bigbench-1.0.0.tar.gz"
ARCHIVE_SHA256 = "1bb398a5512c6d798cdebe0dfa0ac03f67f6033fa6b39c6ef71df978c7cbc5c2"
FETCH_COMMAND = "spillguard data fetch bigbench"
PYPI = "https://pypi.org/simple"
MAX_MEMBER_BYTES = 64 << 20

# task file inside bigbench/benchmark_tasks/ -> cached name (under <cache>/data/bigbench/)
TASK_FILES: dict[str, str] = {
    "qa_wikidata/task.json": "qa_wikidata.json",
    "general_knowledge/task.json": "general_knowledge.json",
    "periodic_elements/subtask_0/task.json": "periodic_elements_0.json",
    "periodic_elements/subtask_1/task.json": "periodic_elements_1.json",
    "object_counting/task.json": "object_counting.json",
    "contextual_parametric_knowledge_conflicts/task.json": "context_conflicts.json",
}
_MEMBER = re.compile(r"^bigbench-1\.0\.0/bigbench/benchmark_tasks/(.+)$")


def _folder(cache: Path | None) -> Path:
    return (cache or cache_root()) / "data" / "bigbench"


def task_file(name: str, cache: Path | None = None) -> Path:
    """The cached copy of one task file (a value of :data:`TASK_FILES`); it may not exist yet.

    The ``qa_wikidata`` file of earlier releases (``data/qa_wikidata/task.json``) still counts.
    """
    path = _folder(cache) / name
    legacy = (cache or cache_root()) / "data" / "qa_wikidata" / "task.json"
    return legacy if name == "qa_wikidata.json" and not path.is_file() and legacy.is_file() else path


def index_url() -> str:
    """The package index pip uses: ``$PIP_INDEX_URL``, pip's configured ``index-url``, else PyPI."""
    configured = os.environ.get("PIP_INDEX_URL", "").strip()
    if not configured:
        try:
            done = subprocess.run(
                [sys.executable, "-m", "pip", "config", "get", "global.index-url"],
                capture_output=True,
                text=True,
                timeout=60,
            )
            configured = done.stdout.strip() if done.returncode == 0 else ""
        except (OSError, subprocess.SubprocessError):
            configured = ""
    return (configured.split()[0] if configured else PYPI).rstrip("/")


class _Links(HTMLParser):
    """The ``<a href>`` targets of a PEP 503 project page, by link text."""

    def __init__(self) -> None:
        super().__init__()
        self.links: dict[str, str] = {}
        self._href: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self._href = dict(attrs).get("href")

    def handle_data(self, data: str) -> None:
        if self._href is not None and data.strip():
            self.links[data.strip()] = self._href
            self._href = None


def archive_url(index: str, *, timeout: float = 60) -> str:
    """The download URL of :data:`ARCHIVE` on a PEP 691 / PEP 503 ``index``."""
    page = f"{index}/{PROJECT}/"
    parts = urllib.parse.urlsplit(page)
    if parts.scheme == "file" and Path(urllib.request.url2pathname(parts.path)).is_dir():
        page += "index.html"  # a local index folder, as pip reads it
    request = urllib.request.Request(page, headers={"Accept": "application/vnd.pypi.simple.v1+json, text/html;q=0.1"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            kind = response.headers.get("Content-Type", "") if hasattr(response, "headers") else ""
            body = response.read(8 << 20).decode("utf-8", errors="replace")
            base = response.geturl() or page
    except (OSError, ValueError) as exc:
        raise DatasetError(
            f"cannot reach the package index {index!r} for {ARCHIVE} (no network?); `{FETCH_COMMAND}` "
            f"needs it once, or pass a downloaded copy with `--archive`: {exc}"
        ) from exc
    links: dict[str, str] = {}
    if "json" in kind or body.lstrip().startswith("{"):
        try:
            links = {f["filename"]: f["url"] for f in json.loads(body).get("files", [])}
        except (ValueError, KeyError, TypeError, AttributeError):
            links = {}
    else:
        parser = _Links()
        parser.feed(body)
        links = parser.links
    if ARCHIVE not in links:
        raise DatasetError(f"the package index {index!r} lists no {ARCHIVE}")
    return urllib.parse.urljoin(base, links[ARCHIVE].split("#")[0])


def _download(url: str, target: Path, say: Callable[[str], None], timeout: float = 60) -> None:
    say(f"downloading {ARCHIVE} (358 MB) from {urllib.parse.urlsplit(url).netloc or url}; only task files are kept")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, private_file(target, "wb") as out:
            shutil.copyfileobj(response, out, 1 << 20)
    except OSError as exc:
        raise DatasetError(f"cannot download {ARCHIVE} from {url!r} (no network?): {exc}") from exc


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _extract(archive: Path, folder: Path, wanted: dict[str, str]) -> None:
    """Copy the ``wanted`` regular-file members out of the archive, read as a stream."""
    found: set[str] = set()
    try:
        with tarfile.open(archive, "r|gz") as tar:
            for member in tar:
                match = _MEMBER.match(member.name)
                if not match or match.group(1) not in wanted or not member.isfile():
                    continue
                if member.size > MAX_MEMBER_BYTES:
                    raise DatasetError(f"{ARCHIVE}: {member.name} is larger than {MAX_MEMBER_BYTES} bytes")
                source = tar.extractfile(member)
                if source is None:
                    continue
                name = wanted[match.group(1)]
                partial = folder / f"{name}.part"
                with private_file(partial, "wb") as out:
                    shutil.copyfileobj(source, out, 1 << 20)
                partial.replace(folder / name)
                found.add(match.group(1))
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise DatasetError(f"{ARCHIVE} is not a readable tar.gz archive: {exc}") from exc
    missing = sorted(set(wanted) - found)
    if missing:
        raise DatasetError(f"{ARCHIVE} holds no {', '.join(missing)}")


def fetch(
    cache: Path | None = None,
    *,
    archive: Path | None = None,
    index: str | None = None,
    sha256: str = ARCHIVE_SHA256,
    log: Callable[[str], None] | None = None,
) -> Path:
    """Cache the task files of :data:`TASK_FILES` once; returns their folder.

    Args:
        cache: the cache root (default ``$SPILLGUARD_CACHE``).
        archive: a downloaded copy of the sdist to use instead of the index.
        index: the package index (default :func:`index_url`).
        sha256: the archive's expected SHA-256 (the pinned one; tests pass their own).
        log: where progress messages go (default stderr).

    Raises :class:`DatasetError` when the index cannot be reached, the archive's hash differs
    (the download is deleted) or a task file is missing from it.
    """
    folder = _folder(cache)
    wanted = {member: name for member, name in TASK_FILES.items() if not (folder / name).is_file()}
    if not wanted:
        return folder
    say = log or (lambda message: print(message, file=sys.stderr))
    private_dir(folder)
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        local = Path(tmp) / ARCHIVE
        if archive is not None:
            if not Path(archive).is_file():
                raise DatasetError(f"`archive` {str(archive)!r} is not a file")
            local = Path(archive)
        else:
            _download(archive_url(index or index_url()), local, say)
        actual = _sha256(local)
        if actual != sha256:
            raise DatasetError(
                f"{local.name} has SHA-256 {actual}, not the pinned {sha256}: refusing to read it "
                "(a changed or corrupted archive)"
            )
        _extract(local, folder, wanted)
    return folder
