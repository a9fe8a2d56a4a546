# Sourced by scripts/test, scripts/test-floors and scripts/demo:
#   source _venv.sh EXTRAS [VENV [CONSTRAINTS]]
# makes VENV (default .venv) with the given extras installed, within CONSTRAINTS if given.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
venv="${2:-.venv}"
constraints=()
if [ -n "${3:-}" ]; then
    constraints=(--constraint "$3")
fi
py="${PYTHON:-python3}"
"$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || {
    echo "aio_client needs Python 3.11 or newer" >&2
    exit 1
}
if [ ! -x "$venv/bin/python" ]; then
    "$py" -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check "${constraints[@]}" -e ".[$1]"
