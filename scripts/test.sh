#!/usr/bin/env bash
# Runs the checks and the whole test suite: ruff (lint and format), mypy, then pytest (unit,
# property, real-model integration, LangChain, LlamaIndex). Extra arguments go to pytest.
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
cd "$ROOT"
"$VENV/bin/ruff" check .
"$VENV/bin/ruff" format --check .
"$VENV/bin/mypy"
exec "$VENV/bin/python" -m pytest "$@"
