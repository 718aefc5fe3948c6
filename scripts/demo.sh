#!/usr/bin/env bash
# Runs the demo on the bundled model: bash scripts/demo.sh
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
exec "$VENV/bin/spillguard" demo "$@"
