#!/usr/bin/env bash
# Runs the whole test suite (unit, property, integration on the real bundled model, host tests).
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
cd "$ROOT"
exec "$VENV/bin/python" -m pytest "$@"
