#!/usr/bin/env bash
# `make demo`: the seed guide's two flows, end to end, on local files in
# ./demo_data. Python (zarr-python) writes, Elixir (ZarrBridge) reads; then
# Elixir writes and Python reads and verifies every value.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
data=$root/demo_data
rm -rf "$data/measurements" "$data/results"
mkdir -p "$data"
run() { "$root/scripts/run_example.sh" "$1" "$data"; }
banner() { printf '\n===== %s =====\n' "$*"; }

(cd "$root/elixir_client" && mix compile >/dev/null)

banner "1. Python producer (examples/create_array.py)"
run create_array.py
banner "2. Elixir consumer (examples/read_array.exs)"
run read_array.exs
banner "3. Elixir producer (examples/create_array.exs)"
run create_array.exs
banner "4. Python consumer (examples/read_array.py)"
run read_array.py
printf '\nDemo done. The arrays are in %s\n' "$data"
