# Shared set-up for scripts/demo and scripts/test: a project venv with the
# build and test tools, and `peer` built (release) and installed into it.
# Sourced, not run. Safe to re-run: it only installs what is missing.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV="$ROOT/.venv"
PY="${PYTHON:-python3}"

if ! command -v cargo >/dev/null 2>&1; then
    echo "scripts: cargo (a Rust toolchain, 1.88 or newer) is required" >&2
    exit 1
fi
if [ ! -x "$VENV/bin/python" ]; then
    echo "==> creating $VENV"
    "$PY" -m venv "$VENV"
fi
if ! "$VENV/bin/python" -c "import maturin, cloudpickle, numpy, pytest, pytest_timeout, pyarrow, mypy" >/dev/null 2>&1; then
    echo "==> installing build and test tools into the venv"
    "$VENV/bin/python" -m pip install --quiet --upgrade pip
    "$VENV/bin/python" -m pip install --quiet -r "$ROOT/scripts/requirements-dev.txt"
fi
echo "==> building peer (release) into the venv"
VIRTUAL_ENV="$VENV" "$VENV/bin/maturin" develop --release --quiet -m "$ROOT/py/Cargo.toml"
