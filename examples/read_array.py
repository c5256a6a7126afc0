# read_array.py — the seed's "Python consumer" step 2, with its integrity
# asserts. zarr-python 3 spells the compressor `z.compressors`.
import zarr
import numpy as np

# Read array created by Elixir
z = zarr.open_array('/shared/data/results', mode='r')

print(f"Shape: {z.shape}")
print(f"Dtype: {z.dtype}")
print(f"Chunks: {z.chunks}")
print(f"Compressor: {z.compressors[0] if z.compressors else None}")

# Read attributes written by Elixir
print("\nAttributes:")
for key, value in z.attrs.items():
    print(f"  {key}: {value}")

# Read data (returns NumPy array)
data = z[:]
print(f"\nData type: {type(data)}")
print(f"First value: {data[0, 0]}")
print(f"Last value: {data[499, 499]}")

# Verify data integrity
expected_first = 0 * 500 + 0  # i * 500 + j
expected_last = 499 * 500 + 499
assert data[0, 0] == expected_first
assert data[499, 499] == expected_last
# Beyond the seed: every value, not just the corners.
assert np.array_equal(data, np.arange(500 * 500, dtype='int32').reshape(500, 500))
print("\nData integrity verified!")
