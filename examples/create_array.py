# create_array.py — the seed's "Python producer" step 1.
#
# The seed was written for zarr-python 2. zarr-python 3 (what we ship) needs
# two spellings changed, and nothing else: `zarr_format=2` to keep the seed's
# v2 array, and `numcodecs.Blosc` (zarr 3 no longer re-exports it).
import zarr
import numcodecs
import numpy as np

# Create array with zarr-python
z = zarr.open_array(
    '/shared/data/measurements',
    mode='w',
    shape=(1000, 500),
    chunks=(100, 50),
    dtype='float64',
    compressor=numcodecs.Blosc(cname='zstd', clevel=3),
    zarr_format=2,
)

# Fill with random data
z[:, :] = np.random.randn(1000, 500)

# Add metadata for consumers
z.attrs['units'] = 'meters'
z.attrs['description'] = 'Sensor measurements'
z.attrs['created_by'] = f'Python zarr-python {zarr.__version__}'

print(f"Created array: shape={z.shape}, dtype={z.dtype}")
print(f"Chunks: {z.chunks}")
print(f"Compressor: {z.compressors[0]}")
