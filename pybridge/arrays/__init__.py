"""Zarr arrays and groups in the sidecar: the work behind ``array.*`` and ``group.*``.

- :mod:`~pybridge.arrays.store`: store refs (filesystem, zip, memory) and
  path confinement;
- :mod:`~pybridge.arrays.kv`: key-value access to every kind of store, and
  the store sessions requests run in;
- :mod:`~pybridge.arrays.zipstore`: zip archives, written atomically;
- :mod:`~pybridge.arrays.docs`: metadata documents, tolerant spellings,
  consolidated metadata;
- :mod:`~pybridge.arrays.metadata`: zarr-python's view of an array, the wire
  metadata map, the metadata cache;
- :mod:`~pybridge.arrays.create`: new arrays (numcodecs configs to zarr codecs);
- :mod:`~pybridge.arrays.groups`: groups, members, trees, consolidation;
- :mod:`~pybridge.arrays.chunks`: chunk grid math (pure);
- :mod:`~pybridge.arrays.pipeline`: chunks decoded/encoded by hand with
  numcodecs, chunk files;
- :mod:`~pybridge.arrays.worker`: the chunk tasks the workers run;
- :mod:`~pybridge.arrays.buffers`: reused shared-memory band buffers;
- :mod:`~pybridge.arrays.read` and :mod:`~pybridge.arrays.write`: the
  banded, pipelined read and write paths (filesystem, fixed-size dtypes);
- :mod:`~pybridge.arrays.inprocess`: reads and writes through zarr-python in
  the sidecar (zip and memory stores, steps, variable-length dtypes);
- :mod:`~pybridge.arrays.ops`: resize, append, raw chunk access;
- :mod:`~pybridge.arrays.extent`: per-array locks that keep shape changes
  apart from each other and from reads and writes.

Nothing here is imported at sidecar start-up.
"""
