"""The worker pool and the codec tasks its workers run.

- :mod:`~pybridge.pool.pool`: the forkserver worker processes, their output
  segments, crashes and retries (the pool is :class:`~pybridge.pool.pool.WorkerPool`);
- :mod:`~pybridge.pool.blosc`: blosc with a thread lock in every process;
- :mod:`~pybridge.pool.codec_tasks`: ``codec.*`` work (encode, decode, runs,
  pipelines) and the corruption checks of compressed frames that the chunk
  codec pipeline (:mod:`pybridge.zarr.chunk_codecs`) uses too.

The chunk tasks of arrays live with the arrays (:mod:`pybridge.zarr.chunk_tasks`).
"""
