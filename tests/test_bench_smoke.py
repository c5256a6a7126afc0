"""A smoke run of the benchmark (``python -m bench latency --runs 1 --quick``).

It drives the whole chain once: the Python driver, ``mix run`` of
``bench/elixir/bench.exs``, a real sidecar and the raw Port echo, the
``BENCH`` records and the table. It asserts what the table says, not how fast.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(shutil.which("mix") is None, reason="mix (Elixir) is not installed")


def test_latency_quick_run_writes_the_table(tmp_path: Path) -> None:
    out = tmp_path / "latest.md"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "latency", "--runs", "1", "--quick",
         "--output", str(out), "--data-dir", str(tmp_path / "data")],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=180,
    )
    assert proc.returncode == 0, proc.stderr + proc.stdout
    table = out.read_text()
    assert table in proc.stdout  # printed as well as written

    rows = [line.split("|") for line in table.splitlines() if line.startswith("| 1 |")]
    # p50 and p99, each for Sidecar.call and for a raw Port to a sidecar.
    assert len(rows) == 4, table
    for cells in rows:
        # ZarrBridge's median, the echo floor's, and a ratio: real numbers.
        assert re.fullmatch(r" \d+(\.\d+)? µs ", cells[3]), cells[3]
        assert re.fullmatch(r" raw Port echo \(\d+ B\) ", cells[4]), cells[4]
        assert re.fullmatch(r" \d+(\.\d+)? µs ", cells[5]), cells[5]
        assert re.fullmatch(r" \d+\.\d\dx ", cells[6]), cells[6]
    targeted = [cells for cells in rows if cells[7].strip()]
    assert len(targeted) == 1
    assert "p50" in targeted[0][2] and "Sidecar.call" in targeted[0][2]
    assert targeted[0][7].strip() == "p50 ≤ 1.5x"
    assert targeted[0][8].strip() in {"**yes**", "**NO**"}


def test_unknown_section_is_refused() -> None:
    proc = subprocess.run([sys.executable, "-m", "bench", "nonsense"], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "unknown section" in proc.stderr
