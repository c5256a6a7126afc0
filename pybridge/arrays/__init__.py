"""Zarr arrays in the sidecar: the work behind the ``array.*`` methods.

- :mod:`~pybridge.arrays.store`: store refs and path confinement;
- :mod:`~pybridge.arrays.metadata`: open with zarr-python, the wire
  metadata map, the metadata cache;
- :mod:`~pybridge.arrays.create`: new arrays (numcodecs configs to zarr codecs);
- :mod:`~pybridge.arrays.chunks`: chunk grid math (pure);
- :mod:`~pybridge.arrays.pipeline`: chunks decoded/encoded by hand with
  numcodecs, chunk files;
- :mod:`~pybridge.arrays.worker`: the chunk tasks the workers run;
- :mod:`~pybridge.arrays.buffers`: reused shared-memory band buffers;
- :mod:`~pybridge.arrays.read` and :mod:`~pybridge.arrays.write`: the
  banded, pipelined read and write paths.

Nothing here is imported at sidecar start-up.
"""
