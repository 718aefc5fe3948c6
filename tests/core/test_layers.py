"""Dependencies point one way: math <- capture <- guard <- adapters; toolkit and CLI on top.

In the spirit of langchain's ``scripts/lint_imports.sh``: a static check of every import
statement, and a dynamic one in a fresh interpreter. transformers itself imports scikit-learn,
tqdm, jinja2 and rich when they are installed, so for those only the static check can tell
whether *our* runtime needs them.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "guardrail"
TOOLKIT, CLI, SERVE = "guardrail.calibrate", "guardrail.cli", "guardrail.serve"
HOSTS = ("langchain_core", "langchain", "langgraph", "llama_index")
RAY = ("ray",)  # imported lazily, only by guardrail.calibrate.ray_engine, guardrail.serve and the CLI
ADAPTERS = ("langchain_spillguard", "llama_index_spillguard")
TOOLKIT_ONLY = ("sklearn", "matplotlib", "countryinfo", "tqdm", "jinja2")
CLI_ONLY = ("rich",)


def _module(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
    return found


def _layer(module: str) -> str:
    if module.startswith(TOOLKIT):
        return "toolkit"
    if module.startswith(SERVE):
        return "serve"
    return "cli" if module.startswith(CLI) else "runtime"


FORBIDDEN = {
    "runtime": (TOOLKIT, CLI, SERVE, *HOSTS, *RAY, *ADAPTERS, *TOOLKIT_ONLY, *CLI_ONLY),
    "toolkit": (CLI, SERVE, *HOSTS, *ADAPTERS, *CLI_ONLY),
    "serve": (TOOLKIT, CLI, *HOSTS, *ADAPTERS, *TOOLKIT_ONLY, *CLI_ONLY),
    "cli": (*HOSTS, *ADAPTERS),
}
SOURCES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_module_imports_a_layer_above_it(path: Path) -> None:
    module = _module(path)
    banned = FORBIDDEN[_layer(module)]
    bad = sorted(name for name in _imports(path) if name.split(".")[0] in banned or name.startswith(banned))
    assert not bad, f"{module} ({_layer(module)}) imports {bad}"


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_core_file_names_an_adapter_package(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    assert not [name for name in ADAPTERS if name in text], f"{path} names an adapter package"


def test_importing_the_runtime_loads_no_toolkit_cli_or_host() -> None:
    _loads_nothing_banned("runtime", (TOOLKIT, CLI, SERVE, "matplotlib", "countryinfo", *HOSTS, *RAY, *ADAPTERS))


def _loads_nothing_banned(layer: str, banned: tuple[str, ...]) -> None:
    modules = [_module(p) for p in SOURCES if _layer(_module(p)) == layer]
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        f"loaded = sorted(m for m in sys.modules if m.split('.')[0] in {banned!r} or m.startswith({banned!r}))\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_importing_the_toolkit_loads_no_cli_host_or_ray() -> None:
    _loads_nothing_banned("toolkit", (CLI, SERVE, *HOSTS, *RAY, *ADAPTERS))


def test_importing_the_server_loads_no_ray_toolkit_or_cli() -> None:
    _loads_nothing_banned("serve", (TOOLKIT, CLI, *HOSTS, *RAY, *ADAPTERS))
