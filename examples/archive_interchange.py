# archive_interchange.py — the seed's "archive interchange" flow, Python side.
#
#   Team A (Python) → publishes a dataset as a Zarr zip archive
#   Team B (Elixir) → consumes it, and publishes its results the same way
#
# Run this step first, then Team B's:
#
#   scripts/run_example.sh archive_interchange.py
#   scripts/run_example.sh archive_interchange.exs
#
# and this one again to read Team B's results.zip back in Python.
#
# archive.zip holds a Zarr v3 group with the array `measurements` (float64,
# 200×100, attribute units=meters) and the subgroup `labels` with the
# variable-length string array `names` ("sample-0" … "sample-199").
import os

import numpy as np
import zarr
from zarr.storage import ZipStore

archive = "/shared/data/archive.zip"
results = "/shared/data/results.zip"
rows, cols = 200, 100

# --- Team A publishes its dataset ---------------------------------------------

# A zip archive is written once: every node gets its attributes when it is
# created, so no entry is written twice.
if os.path.exists(archive):
    os.remove(archive)
measurements = (np.arange(rows * cols, dtype="float64").reshape(rows, cols) % 997) * 0.25
names = np.array([f"sample-{i}" for i in range(rows)], dtype=np.dtypes.StringDType())

with ZipStore(archive, mode="w") as store:
    root = zarr.create_group(store, attributes={"title": "archive interchange",
                                                "produced_by": "zarr-python"})
    m = root.create_array("measurements", shape=(rows, cols), chunks=(50, 50),
                          dtype="float64", attributes={"units": "meters"})
    m[:] = measurements
    labels = root.create_group("labels")
    n = labels.create_array("names", shape=(rows,), chunks=(100,), dtype=str)
    n[:] = names

with ZipStore(archive, mode="r") as store:
    root = zarr.open_group(store, mode="r")
    print(f"Team A wrote {archive}:")
    print(root.tree())
    m = root["measurements"]
    print(f"measurements: {m.shape} {m.dtype}, chunks {m.chunks}, "
          f"units {m.attrs['units']}, mean {float(m[:].mean()):.6f}")
    print(f"labels/names: {root['labels/names'].shape[0]} strings, "
          f"first {root['labels/names'][:3].tolist()}")

# --- Team B's results, once the Elixir step has run ------------------------------

if os.path.exists(results):
    with ZipStore(results, mode="r") as store:
        out = zarr.open_group(store, mode="r")
        print(f"\nTeam B's {results} (Zarr v{out.metadata.zarr_format}, "
              f"produced by {out.attrs.get('produced_by')!r}):")
        print(out.tree())
        row_means = out["row_means"][:]
        assert np.allclose(row_means, measurements.mean(axis=1)), "row means differ"
        assert out["labels"][:].tolist() == names.tolist(), "labels differ"
        print(f"row_means match Team A's data ({row_means.shape[0]} rows, "
              f"units {out['row_means'].attrs.get('units')}); labels match.")
else:
    print(f"\n(no {results} yet: run archive_interchange.exs, then this script again)")
