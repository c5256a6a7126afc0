# Bidirectional flow, step 3 (Python): final analysis checks Elixir's update.
import zarr
import numpy as np

z = zarr.open_array('/shared/data/pipeline', mode='r')
expected = np.arange(400 * 300, dtype='float64').reshape(400, 300)
expected[100:200] *= 2
assert np.array_equal(z[:], expected), "Elixir's update does not match"
assert z.attrs['stage'] == 'elixir-updated'
print(f"Python verified Elixir's update: stage={z.attrs['stage']}, sum={z[:].sum():.0f}")
