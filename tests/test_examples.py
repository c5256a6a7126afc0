"""The seed guide's flows, run as a user runs them: the scripts in examples/.

Each flow runs its scripts in order through ``scripts/run_example.sh`` (which
moves the seed's /shared/data paths to a temporary directory): real
zarr-python on one side, the real Elixir client and sidecar (``mix run``) on
the other. The outputs are checked here as well, independently of the
scripts' own asserts.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import zarr

REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(shutil.which("mix") is None, reason="mix (Elixir) is not installed")


def run(name: str, data: Path) -> str:
    proc = subprocess.run([str(REPO / "scripts" / "run_example.sh"), name, str(data)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{name} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def test_python_producer_elixir_consumer(tmp_path: Path) -> None:
    run("create_array.py", tmp_path)
    out = run("read_array.exs", tmp_path)
    z = zarr.open_array(str(tmp_path / "measurements"), mode="r")
    assert "Shape: {1000, 500}" in out
    assert "Dtype: :float64" in out
    assert "Chunks: {100, 50}" in out
    assert "Compressor: :blosc" in out
    assert "Units: meters" in out
    assert "Description: Sensor measurements" in out
    first = float(out.split("First value: ")[1].split()[0])
    assert first == z[0, 0]  # the printed float round-trips exactly


def test_elixir_producer_python_consumer(tmp_path: Path) -> None:
    run("create_array.exs", tmp_path)
    out = run("read_array.py", tmp_path)  # asserts every value itself
    assert "Data integrity verified!" in out
    z = zarr.open_array(str(tmp_path / "results"), mode="r")
    assert z.metadata.zarr_format == 2 and z.dtype == np.dtype("int32")
    assert z.attrs["units"] == "counts"
    assert np.array_equal(z[:], np.arange(250_000, dtype="int32").reshape(500, 500))


def test_bidirectional_flow(tmp_path: Path) -> None:
    run("bidirectional_1_create.py", tmp_path)
    run("bidirectional_2_update.exs", tmp_path)
    out = run("bidirectional_3_verify.py", tmp_path)
    assert "Python verified Elixir's update" in out
    z = zarr.open_array(str(tmp_path / "pipeline"), mode="r")
    expected = np.arange(400 * 300, dtype="float64").reshape(400, 300)
    expected[100:200] *= 2
    assert np.array_equal(z[:], expected)
    assert z.attrs["stage"] == "elixir-updated"
