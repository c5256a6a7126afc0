# Bidirectional flow, step 1 (Python): initial processing writes an array.
import zarr
import numpy as np

z = zarr.open_array('/shared/data/pipeline', mode='w', shape=(400, 300),
                    chunks=(100, 100), dtype='float64', zarr_format=3)
z[:] = np.arange(400 * 300, dtype='float64').reshape(400, 300)
z.attrs['stage'] = 'python-initial'
print(f"Python wrote {z.shape} {z.dtype}, stage={z.attrs['stage']}")
