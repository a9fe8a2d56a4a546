# Sourced by scripts/test, scripts/test-floors and scripts/demo:
#   source _venv.sh EXTRAS [VENV [CONSTRAINTS]]
# makes VENV (default .venv) with the given extras installed, within CONSTRAINTS if given.
# Says what it does, one line per step, and shows pip's own progress while it installs; a
# later run whose pyproject.toml, extras and constraints are unchanged installs nothing.
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
step() { echo "==> $*" >&2; }
if [ ! -x "$venv/bin/python" ]; then
    step "creating $venv"
    "$py" -m venv "$venv"
fi
# What the installed environment was made from: reinstall only when it changes.
wanted="$(cat pyproject.toml ${3:+"$3"} | "$py" -c 'import hashlib, sys; print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest())') [$1]"
stamp="$venv/.aio_client-installed-$1"
if [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
    rm -f "$stamp"
    step "upgrading pip in $venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
    # This tree's distribution used to be called aio-client, a name an unrelated
    # project holds on the package registry: drop such an editable install of this tree.
    old="$("$venv/bin/python" -m pip show aio-client 2>/dev/null || true)"
    if grep -qx "Editable project location: $root" <<<"$old"; then
        step "removing this tree's old aio-client install from $venv (now aio-client-resilient)"
        "$venv/bin/python" -m pip uninstall --quiet --yes aio-client
    fi
    step "installing aio_client with the [$1] extra and its dependencies into $venv (about a minute the first time)"
    "$venv/bin/python" -m pip install --disable-pip-version-check --progress-bar on \
        "${constraints[@]}" -e ".[$1]" >&2
    echo "$wanted" >"$stamp"
    step "$venv is ready"
fi
