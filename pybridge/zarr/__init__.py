"""Zarr arrays and groups in the sidecar: the work behind ``array.*`` and ``group.*``.

Bottom to top (each imports only the ones above it in this list, never below):

- :mod:`~pybridge.zarr.chunks`: chunk grid math (pure), the request size limit;
- :mod:`~pybridge.zarr.store`: store refs (filesystem, zip, memory) and
  path confinement;
- :mod:`~pybridge.zarr.oserrors`: OSErrors of store I/O as ``store_error``;
- :mod:`~pybridge.zarr.files`: every store file opened (regular files only,
  bounded sizes), chunk files read, written and removed;
- :mod:`~pybridge.zarr.zipstore`: zip archives, written atomically;
- :mod:`~pybridge.zarr.kv`: key-value access to every kind of store, and
  the store sessions requests run in;
- :mod:`~pybridge.zarr.documents`: metadata documents, tolerant spellings,
  consolidated metadata;
- :mod:`~pybridge.zarr.chunk_codecs`: the chunk codec pipeline (chunks
  decoded/encoded by hand with numcodecs);
- :mod:`~pybridge.zarr.shards`: shards read and written by hand;
- :mod:`~pybridge.zarr.metadata`: zarr-python's view of an array, the wire
  metadata map, the metadata cache;
- :mod:`~pybridge.zarr.create`: new arrays (numcodecs configs to zarr codecs);
- :mod:`~pybridge.zarr.groups`: groups, members, trees, consolidation;
- :mod:`~pybridge.zarr.chunk_tasks`: the chunk tasks the workers run;
- :mod:`~pybridge.zarr.buffers`: reused shared-memory band buffers;
- :mod:`~pybridge.zarr.locks` and :mod:`~pybridge.zarr.extent`: chunk locks,
  and per-array locks that keep shape changes apart from each other and from
  reads and writes;
- :mod:`~pybridge.zarr.inprocess`: reads and writes through zarr-python in
  the sidecar (zip and memory stores, steps, variable-length dtypes);
- :mod:`~pybridge.zarr.read` and :mod:`~pybridge.zarr.write`: the
  banded, pipelined read and write paths (filesystem, fixed-size dtypes);
- :mod:`~pybridge.zarr.ops`: resize, append, raw chunk access.

Nothing here is imported at sidecar start-up.
"""
