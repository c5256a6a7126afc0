#!/usr/bin/env bash
# Installs what `make test`, `make demo` and `make bench` need, skipping what
# is already there. Safe to run again: each step checks before it acts.
#
#   scripts/setup.sh [--bench]
#
# - Elixir/OTP from Debian (`apt-get install elixir`) when missing. As root it
#   installs it; otherwise it says what to install and stops.
# - A virtualenv in .venv with the sidecar (distribution zarr-bridge-sidecar,
#   import package pybridge) installed editable plus its remote extras (the
#   object-store engines it runs with), its test extras and its
#   dev extras (mypy and ruff, the gates `make test` runs), and the bench
#   extras with --bench, its dependencies pinned by constraints.txt.
#   The Elixir tests find it at run time as this checkout's .venv.
# - Azurite (the Azure test server) from npm into .tools/, with Debian's
#   nodejs/npm when node is missing. The other test servers are PyPI packages
#   in the test extra (moto, gcp-storage-emulator).
# - `mix release` (the fresh_app test) needs nothing beyond Debian's elixir
#   package: erlang-base carries erts and sasl.
# - The Elixir client compiled.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
want_bench=0
[ "${1:-}" = "--bench" ] && want_bench=1

say() { printf '==> %s\n' "$*"; }
die() { printf 'setup: %s\n' "$*" >&2; exit 1; }

apt_updated=0
apt_install() {
  if [ "$(id -u)" -ne 0 ]; then
    die "missing: $*. Install it first, for example: sudo apt-get install -y --no-install-recommends $*"
  fi
  if [ "$apt_updated" -eq 0 ]; then
    say "apt-get update"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    apt_updated=1
  fi
  say "apt-get install $*"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# --- Elixir / OTP ------------------------------------------------------------
if ! command -v elixir >/dev/null 2>&1 || ! command -v mix >/dev/null 2>&1; then
  apt_install elixir
fi
command -v mix >/dev/null 2>&1 || die "mix is still missing after installing elixir"

# --- Python 3.11+ and the virtualenv ------------------------------------------
python=${PYTHON:-}
if [ -z "$python" ]; then
  for candidate in python3.11 python3.12 python3.13 python3; do
    if command -v "$candidate" >/dev/null 2>&1; then python=$candidate; break; fi
  done
fi
[ -n "$python" ] || die "no python3 found: install Python 3.11 or newer"
"$python" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' \
  || die "$python is older than 3.11: set PYTHON=/path/to/python3.11"

venv=.venv
stamp=$venv/.pybridge-installed
# remote: the object-store engines the sidecar needs at run time (issue 13).
extras=remote,test,dev
[ "$want_bench" -eq 1 ] && extras=remote,test,dev,bench
needs_install=0
if [ ! -x "$venv/bin/python" ]; then
  say "creating $venv with $python"
  if ! "$python" -m venv "$venv" 2>/dev/null; then
    rm -rf "$venv"
    apt_install python3-venv
    "$python" -m venv "$venv"
  fi
  needs_install=1
fi
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ constraints.txt -nt "$stamp" ] \
   || ! grep -qx "$extras" "$stamp"; then
  needs_install=1
fi
if [ "$needs_install" -eq 1 ]; then
  # constraints.txt holds the sidecar's dependencies at the versions the
  # project tests with, the same ones `mix zarr_bridge.install` installs.
  say "installing zarr-bridge-sidecar[$extras] (import package pybridge) into $venv"
  "$venv/bin/python" -m pip install -q --upgrade pip >/dev/null
  # The distribution used to be called pybridge (another project's name on PyPI).
  "$venv/bin/python" -m pip uninstall -q -y pybridge >/dev/null 2>&1 || true
  "$venv/bin/python" -m pip install -q -c constraints.txt -e ".[$extras]"
  echo "$extras" > "$stamp"
fi

# --- Azurite (the Azure test server) -------------------------------------------
# From the npm registry into .tools/ (git-ignored), never globally; node and
# npm from Debian when missing. tests/servers/azure.py runs
# .tools/node_modules/.bin/azurite-blob.
azurite_version=3.35.0
azurite=.tools/node_modules/.bin/azurite-blob
if [ ! -x "$azurite" ] || ! grep -q "\"version\": \"$azurite_version\"" .tools/node_modules/azurite/package.json 2>/dev/null; then
  if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    apt_install nodejs npm
  fi
  say "installing azurite@$azurite_version into .tools"
  mkdir -p .tools
  npm install --prefix .tools --no-audit --no-fund --loglevel=error --no-save "azurite@$azurite_version" >/dev/null
fi
[ -x "$azurite" ] || die "azurite-blob is still missing after npm install (see .tools/)"

# The machine may set PYTHONDONTWRITEBYTECODE=1; bytecode compiled here is
# still read at import, which saves the sidecar ~20 ms at every start.
"$venv/bin/python" -m compileall -q pybridge >/dev/null || true

# --- The Elixir client ---------------------------------------------------------
export LANG=${LANG:-C.UTF-8} LC_ALL=${LC_ALL:-C.UTF-8}
say "compiling the Elixir client"
(cd elixir_client && mix compile >/dev/null && MIX_ENV=test mix compile >/dev/null)
say "setup done"
