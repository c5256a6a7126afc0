"""Runs the Elixir half of the benchmark (``bench/elixir/bench.exs``) and collects its records.

Jobs go to the script as a file, one per line: the kind, then tab-separated
``key=value`` fields. The script prints one ``BENCH {json}`` line per
measurement; other output is its log, shown only with ``--verbose`` or when
the script fails.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.inproc import BenchError

__all__ = ["ElixirRunner", "Job"]

REPO = Path(__file__).resolve().parent.parent
CLIENT_DIR = REPO / "elixir_client"
SCRIPT = REPO / "bench" / "elixir" / "bench.exs"
ECHO = REPO / "bench" / "echo.py"


@dataclass
class Job:
    """One job for the Elixir script; ``fields`` values must not hold tabs or newlines.

    With ``between``, the script stops before each timed run and waits until
    ``between(run)`` has returned: the sections run one in-process baseline
    run there, so both sides alternate.
    """

    kind: str
    fields: dict[str, Any]
    between: Callable[[int], None] | None = None
    records: list[dict[str, Any]] = field(default_factory=list)

    def line(self, job_id: str) -> str:
        parts = [self.kind, f"job={job_id}", f"sync={'true' if self.between else 'false'}"]
        for key, value in self.fields.items():
            text = str(value).lower() if isinstance(value, bool) else str(value)
            if "\t" in text or "\n" in text:
                raise ValueError(f"job field {key}={text!r} holds a tab or newline")
            parts.append(f"{key}={text}")
        return "\t".join(parts)

    def runs(self) -> list[dict[str, Any]]:
        """Records of timed runs (not warm-ups, not memory reports)."""
        return [r for r in self.records if "run" in r and not r.get("warmup")]

    def one(self, flag: str) -> dict[str, Any]:
        found = [r for r in self.records if r.get(flag)]
        if len(found) != 1:
            raise BenchError(f"{self.kind} job: expected one {flag!r} record, got {len(found)}")
        return found[0]


class ElixirRunner:
    """Runs jobs through ``mix run`` with the sidecar's Python."""

    def __init__(self, python: str, verbose: bool = False,
                 profile_dir: Path | None = None) -> None:
        self.python = python
        self.verbose = verbose
        #: With a directory, every sidecar is recorded by py-spy (with its workers)
        #: into ``<dir>/<n>-<kind>.txt``, as collapsed stacks.
        self.profile_dir = profile_dir
        self._profiles = 0
        self._spies: list[subprocess.Popen[bytes]] = []

    def run(self, jobs: list[Job]) -> None:
        """Run ``jobs`` in one BEAM, filling each job's ``records``."""
        with tempfile.NamedTemporaryFile("w", suffix=".jobs", delete=False) as f:
            for i, job in enumerate(jobs):
                line = job.line(str(i))
                if self.profile_dir is not None:
                    line += "\tprofile=true"
                f.write(line + "\n")
            jobs_file = f.name
        env = dict(os.environ)
        env.setdefault("LANG", "C.UTF-8")
        env.setdefault("LC_ALL", "C.UTF-8")
        env["ZARR_BRIDGE_PYTHON"] = self.python
        env["ZARR_BRIDGE_NO_DEFAULT_SIDECAR"] = "1"
        cmd = ["mix", "run", "--no-start", str(SCRIPT), jobs_file]
        by_job: dict[str, list[dict[str, Any]]] = defaultdict(list)
        log: list[str] = []
        proc = subprocess.Popen(cmd, cwd=CLIENT_DIR, env=env, stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            assert proc.stdout is not None and proc.stdin is not None
            for line in proc.stdout:
                if line.startswith("BENCH "):
                    record = json.loads(line[6:])
                    job_id = str(record.pop("job"))
                    if "sync" in record:
                        self._between(jobs[int(job_id)], int(record["sync"]))
                        self._go(proc)
                        continue
                    if "attach" in record:
                        self._attach(jobs[int(job_id)], int(record["attach"]))
                        self._go(proc)
                        continue
                    by_job[job_id].append(record)
                else:
                    log.append(line)
                    if self.verbose:
                        sys.stderr.write("  [elixir] " + line)
            status = proc.wait()
        except BaseException:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            raise
        finally:
            os.unlink(jobs_file)
            for spy in self._spies:  # each ends when its sidecar has exited
                spy.wait()
            self._spies.clear()
        if status != 0:
            errors = [line.strip() for line in log if line.startswith("** (")]
            summary = errors[-1][:300] if errors else "see the log below"
            tail = "".join(log[-40:])
            raise BenchError(f"the Elixir bench script failed (exit {status}): {summary}\n{tail}")
        for i, job in enumerate(jobs):
            job.records = [r for r in by_job[str(i)] if r.get("event") is None]
            events = [r["event"] for r in by_job[str(i)] if r.get("event")]
            if events != ["start", "done"]:
                raise BenchError(f"{job.kind} job did not finish: {''.join(log[-20:])}")

    @staticmethod
    def _between(job: Job, run: int) -> None:
        if job.between is None:
            raise BenchError(f"{job.kind} job asked to sync but has no baseline to run")
        job.between(run)

    @staticmethod
    def _go(proc: subprocess.Popen[str]) -> None:
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()

    def _attach(self, job: Job, os_pid: int) -> None:
        """Start ``py-spy record`` on the sidecar ``os_pid`` and its workers."""
        assert self.profile_dir is not None
        spy = shutil.which("py-spy", path=os.path.dirname(self.python)) or shutil.which("py-spy")
        if spy is None:
            raise BenchError("--profile needs py-spy: pip install py-spy")
        self.profile_dir.mkdir(parents=True, exist_ok=True)
        self._profiles += 1
        out = self.profile_dir / f"{self._profiles:02d}-{job.kind}.txt"
        self._spies.append(subprocess.Popen(
            [spy, "record", "--pid", str(os_pid), "--subprocesses", "--rate", "250",
             "--format", "raw", "--output", str(out)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        time.sleep(1.0)  # let it attach before the timed runs start
