# read_array.exs — the seed's "Python producer, Elixir consumer" step 2, with
# ExZarr renamed to ZarrBridge. The Nx lines are left out: Nx cannot be
# installed here. Run it with `scripts/run_example.sh read_array.exs`.

# Open array created by Python
{:ok, array} = ZarrBridge.open(
  storage: :filesystem,
  path: "/shared/data/measurements"
)

# Inspect metadata (automatically detected from Python format)
IO.puts("Shape: #{inspect(array.metadata.shape)}")
IO.puts("Dtype: #{inspect(array.metadata.dtype)}")
IO.puts("Chunks: #{inspect(array.metadata.chunks)}")
IO.puts("Compressor: #{inspect(array.metadata.compressor)}")

# Read attributes created by Python
IO.puts("\nAttributes:")
IO.puts("  Units: #{array.metadata.attributes["units"]}")
IO.puts("  Description: #{array.metadata.attributes["description"]}")
IO.puts("  Created by: #{array.metadata.attributes["created_by"]}")

# Read a slice of data
{:ok, data} = ZarrBridge.Array.get_slice(array,
  start: {0, 0},
  stop: {100, 50}
)

# Data is nested tuples (Elixir native format)
IO.puts("\nRead slice [0:100, 0:50]")
IO.puts("First value: #{elem(elem(data, 0), 0)}")
IO.puts("Data structure: nested tuples")
