# create_array.exs — the seed's "Elixir producer, Python consumer" step 1,
# with ExZarr renamed to ZarrBridge. Run it with
# `scripts/run_example.sh create_array.exs`.

# Create array for Python consumption
{:ok, array} = ZarrBridge.create(
  shape: {500, 500},
  chunks: {50, 50},
  dtype: :int32,
  compressor: :zlib,  # Universally supported
  storage: :filesystem,
  path: "/shared/data/results",
  zarr_version: 2  # Use v2 for maximum compatibility
)

# Generate data (nested tuples)
data = for i <- 0..499 do
  for j <- 0..499 do
    i * 500 + j
  end
  |> List.to_tuple()
end
|> List.to_tuple()

# Write data
:ok = ZarrBridge.Array.set_slice(array, data,
  start: {0, 0},
  stop: {500, 500}
)

# Add attributes for Python users
# (Provides context for consumers)
:ok = ZarrBridge.Array.put_attributes(array, %{
  "units" => "counts",
  "description" => "Processing results from Elixir pipeline",
  "created_by" => "ExZarr v1.0.0",
  "timestamp" => DateTime.utc_now() |> DateTime.to_iso8601()
})

IO.puts("Created array for Python consumption")
IO.puts("Path: /shared/data/results")
IO.puts("Format: Zarr v2 (compatible with zarr-python 2.x)")
IO.puts("Compressor: zlib (universally supported)")
