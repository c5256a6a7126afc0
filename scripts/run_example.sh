#!/usr/bin/env bash
# Runs one script from examples/ on local files.
#
#   scripts/run_example.sh NAME [DATA_DIR]
#
# The examples are the seed guide's scripts and keep its paths under
# /shared/data. This runs a copy whose /shared/data is replaced by DATA_DIR
# (default: ./demo_data), so nothing outside the checkout is touched. .py files
# run with the project's .venv; .exs files run with `mix run` inside
# elixir_client, which starts the ZarrBridge application and its sidecar.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
name=${1:?usage: scripts/run_example.sh NAME [DATA_DIR]}
data=$(mkdir -p "${2:-$root/demo_data}" && cd "${2:-$root/demo_data}" && pwd)
src=$root/examples/$name
[ -f "$src" ] || { echo "no such example: $src" >&2; exit 2; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
sed "s#/shared/data#$data#g" "$src" > "$tmp/$name"

export LANG=${LANG:-C.UTF-8} LC_ALL=${LC_ALL:-C.UTF-8}
case "$name" in
  *.py) "$root/.venv/bin/python" "$tmp/$name" ;;
  *.exs) cd "$root/elixir_client" && mix run --no-compile "$tmp/$name" ;;
  *) echo "unknown example type: $name" >&2; exit 2 ;;
esac
