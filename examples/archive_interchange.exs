# archive_interchange.exs — the seed's "archive interchange" flow, Elixir side.
#
#   Team A (Python) → publishes a dataset as a Zarr zip archive
#   Team B (Elixir) → consumes it, and publishes its results the same way
#
# Run Team A's step first, then this one:
#
#   scripts/run_example.sh archive_interchange.py
#   scripts/run_example.sh archive_interchange.exs
#
# archive.zip holds a group with the array `measurements` (float64, 200×100,
# attribute units=meters) and the subgroup `labels` with the string array
# `names`. This script writes results.zip: a v3 group with the per-row means
# of `measurements` and a copy of the labels, for Python to read.

alias ZarrBridge.{Array, Group, NDArray}

# --- Team B consumes Team A's archive --------------------------------------

archive = Group.open!(storage: :zip, path: "/shared/data/archive.zip", mode: :r)
IO.puts("Archive /shared/data/archive.zip (Zarr v#{archive.zarr_format}):")
IO.write(Group.tree!(archive))

measurements = Group.open_array!(archive, "measurements")
names = Group.open_array!(archive, "labels/names")

data = Array.read!(measurements)
{rows, cols} = data.shape
values = NDArray.to_list(data)
numbers = Enum.filter(values, &is_float/1)
{low, high} = Enum.min_max(numbers)
units = measurements.metadata.attributes["units"]

IO.puts("""

measurements: #{rows}×#{cols} #{inspect(measurements.metadata.dtype)}, \
chunks #{inspect(measurements.metadata.chunks)}, units: #{units}
  mean #{Float.round(Enum.sum(numbers) / max(length(numbers), 1), 6)}, \
min #{Float.round(low, 6)}, max #{Float.round(high, 6)}\
""")

labels = Array.read!(names)

IO.puts("""
labels/names: #{length(labels.data)} #{inspect(labels.dtype)} values
  first names: #{inspect(Enum.take(labels.data, 3))}, last: #{inspect(List.last(labels.data))}
""")

# --- Team B publishes its results ------------------------------------------

row_means =
  values
  |> Enum.chunk_every(cols)
  |> Enum.map(fn row ->
    row = Enum.filter(row, &is_float/1)
    if row == [], do: :nan, else: Enum.sum(row) / length(row)
  end)

results_path = "/shared/data/results.zip"
File.rm(results_path)

results =
  Group.create!(
    storage: :zip,
    path: results_path,
    zarr_version: 3,
    attributes: %{"source" => "archive.zip", "produced_by" => "ZarrBridge (Elixir)"}
  )

means =
  Group.create_array!(results, "row_means",
    shape: {rows},
    chunks: {50},
    dtype: :float64,
    compressor: {:zstd, level: 3},
    dimension_names: ["sample"],
    attributes: %{"units" => units, "description" => "mean of each row of measurements"}
  )

:ok = Array.write(means, NDArray.from_list!(row_means, {rows}, :float64))

copy = Group.create_array!(results, "labels", shape: labels.shape, dtype: :string)
:ok = Array.write(copy, labels)

# One document for every node: Python opens the archive with a single read.
ZarrBridge.consolidate_metadata!(storage: :zip, path: results_path)

IO.puts("Wrote #{results_path}:")
IO.write(Group.tree!(Group.open!(storage: :zip, path: results_path, mode: :r)))
