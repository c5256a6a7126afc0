"""The benchmark's sections. Each measures ZarrBridge and its baseline in the same run
and returns table rows.

| section | rows |
|---|---|
| ``latency`` | 1: ``ping`` p50/p99 against a raw ``{packet, 4}`` echo |
| ``seed`` | 2: the seed's array, full read |
| ``big`` | 3 and 8: a 256 MiB array, full read (handoff and pipe), peak RSS |
| ``sharded`` | 4: the same array in sharded form, full read |
| ``write`` | 5: full writes of the arrays of rows 3 and 4 |
| ``codecs`` | 6: ``codec.decode_many`` throughput (issue 3's ``bench/codecs``) |
| ``start`` | 7: sidecar start against ``import zarr, numcodecs`` |
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import data, inproc
from bench.data import Dataset
from bench.inproc import Baseline, BenchError
from bench.report import Row, Target, series_from
from bench.runner import ECHO, ElixirRunner, Job
from bench.stats import Series

__all__ = ["SECTIONS", "Context"]

KiB = 1024
MiB = 1024 * KiB
#: The sidecar's stream frame size (PROTOCOL.md, the default of ``--stream-frame-bytes``).
STREAM_FRAME_BYTES = 256 * KiB


@dataclass
class Context:
    """What every section needs: where the data lives, how many runs, who runs Elixir."""

    root: Path
    runs: int
    quick: bool
    python: str
    elixir: ElixirRunner
    workers: int = field(default_factory=lambda: os.cpu_count() or 1)
    #: Row 6: chunks per ``decode_many`` call, and calls in flight (0: all of them).
    codec_batch: int = 4
    codec_in_flight: int = 0
    notes: list[str] = field(default_factory=list)
    _datasets: dict[str, Dataset] = field(default_factory=dict)

    def dataset(self, name: str) -> Dataset:
        if name not in self._datasets:
            self._datasets[name] = data.prepare_dataset(name, self.root, self.quick)
        return self._datasets[name]

    def data_lines(self) -> list[str]:
        """One line per dataset used, for the table's header."""
        return [f"- {ds.title}: {ds.description}; {ds.chunk_count} chunk(s)"
                + (f" in {ds.shard_count} shards" if ds.shards else "")
                for ds in self._datasets.values()]

    def sidecar_fields(self, workers: int | None = None) -> dict[str, Any]:
        return {"python": self.python, "workers": workers or self.workers,
                "roots": str(self.root)}

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)


def _checked_seconds(job: Job, want_sha: str, what: str) -> Series:
    """The timed runs' seconds, after checking every result's hash (warm-up included)."""
    runs = job.runs()
    if not runs:
        raise BenchError(f"{what}: no timed runs came back")
    for r in job.records:
        if "sha256" in r and r["sha256"] != want_sha:
            which = "the warm-up" if r.get("warmup") else f"run {r.get('run')}"
            raise BenchError(f"{what}: {which} returned wrong bytes "
                             f"(sha256 {r['sha256'][:16]}…, want {want_sha[:16]}…)")
    return series_from(runs, "seconds")


def _cpu_note(ctx: Context, what: str, job: Job, wall: Series) -> None:
    """Say where a job's timed runs spent CPU: the BEAM, the sidecar, its workers."""
    found = [r["cpu"] for r in job.records if "cpu" in r]
    if not found:
        return
    parts: dict[str, list[float]] = {}
    for entry in found[0]:
        parts.setdefault(entry["label"], []).append(float(entry["ms"]))
    text = ", ".join(f"{label} {' + '.join(f'{ms:.0f}' for ms in values)} ms"
                     for label, values in parts.items() if sum(values) >= 0.5)
    ctx.note(f"CPU per run, {what}: {text} (user + system, from /proc; wall median "
             f"{wall.median * 1e3:.0f} ms).")


def _baseline_cpu_note(ctx: Context, what: str, baseline: Baseline, wall: Series) -> None:
    if baseline.cpu:
        cpu = Series.of(baseline.cpu)
        ctx.note(f"CPU per run, {what}: {cpu.median * 1e3:.0f} ms, all threads of the "
                 f"process (wall median {wall.median * 1e3:.0f} ms).")


def _alternate(*pairs: tuple[Baseline, Series]) -> Callable[[int], None]:
    """A ``Job.between`` that runs each baseline once, adding its value to its series."""
    for baseline, _ in pairs:
        baseline.warm()

    def between(run: int) -> None:
        for baseline, series in pairs:
            series.add(baseline.once())

    return between


#: How a read's result travels: the ``handoff:`` option passed to ``Array.read``.
PATHS = {"handoff": "true", "pipe": "false"}
DEFAULT_PATH = {"default": "default"}


def _path_label(path: str, job: Job, ds: Dataset) -> str:
    """Name the path a read took, from the bytes its port delivered per run."""
    piped = max(int(r["pipe_bytes"]) for r in job.runs())
    if path == "default":
        how = "handoff" if piped < ds.nbytes // 2 else "pipe"
        return f"default options (the result came by {how})"
    if path == "handoff" and piped >= ds.nbytes // 2:
        return "`handoff: true`, **but the result came through the pipe**"
    return "`handoff: true`" if path == "handoff" else "`handoff: false` (pipe-streamed)"


def _read_rows(row: str, ds: Dataset, ctx: Context, zarr_target: float | None,
               ts_target: float | None, pipe_target: float | None,
               paths: dict[str, str] = PATHS) -> tuple[list[Row], dict[str, Job]]:
    zp = Series()
    ts: Series | None = None
    pairs: list[tuple[Baseline, Series]] = [(inproc.ZarrRead(ds), zp)]
    if inproc.tensorstore_available():
        ts = Series()
        pairs.append((inproc.TensorstoreRead(ds), ts))
    else:
        ctx.note("tensorstore is not installed: its rows are missing "
                 "(`scripts/setup.sh --bench` installs it).")
    between = _alternate(*pairs)
    jobs = {path: Job("read", {**ctx.sidecar_fields(), "path": ds.path, "handoff": flag,
                               "runs": ctx.runs}, between)
            for path, flag in paths.items()}
    for job in jobs.values():  # a BEAM each, so each has its own memory peak
        ctx.elixir.run([job])
    for baseline, series in pairs:
        _baseline_cpu_note(ctx, f"row {row} {baseline.name} of {ds.title}", baseline, series)
        baseline.close()
    what = f"full read of {ds.title}"
    rows: list[Row] = []
    for path, job in jobs.items():
        ours = _checked_seconds(job, ds.sha256, f"ZarrBridge read of {ds.name} ({path})")
        label = f"{what}: `Array.read`, {_path_label(path, job, ds)}"
        _cpu_note(ctx, f"row {row} {_path_label(path, job, ds)}", job, ours)
        z_t = pipe_target if path == "pipe" else zarr_target
        rows.append(Row(row, label, ours, "ms", "zarr-python `z[...]`", zp,
                        Target("le", z_t, f"≤ {z_t}x") if z_t else None))
        if ts is not None:
            t_t = None if path == "pipe" else ts_target
            rows.append(Row(row, label, ours, "ms", "tensorstore `read()`", ts,
                            Target("le", t_t, f"≤ {t_t}x") if t_t else None))
    return rows, jobs


def section_latency(ctx: Context) -> list[Row]:
    calls = 500 if ctx.quick else 2000
    job = Job("latency", {**ctx.sidecar_fields(1), "echo": ECHO, "runs": ctx.runs,
                          "calls": calls})
    ctx.elixir.run([job])
    runs = job.runs()
    echo = f"raw Port echo ({runs[0]['frame_bytes']} B)"
    what = f"small-call latency, {calls} calls a run"
    rows = []
    for q in ("p50", "p99"):
        rows += [
            Row("1", f"{what}, {q}: `Sidecar.call(s, \"ping\", %{{}})`",
                series_from(runs, f"ping_{q}_us"), "µs", echo, series_from(runs, f"echo_{q}_us"),
                Target("le", 1.5, "p50 ≤ 1.5x") if q == "p50" else None),
            Row("1", f"{what}, {q}: the same `ping` frame on a raw Port to a sidecar "
                     "(no `ZarrBridge.Sidecar`)",
                series_from(runs, f"raw_{q}_us"), "µs", echo, series_from(runs, f"echo_{q}_us")),
        ]
    ctx.note("Row 1: the three are measured alternately in one BEAM process: the echo is "
             "`bench/echo.py` (read a frame from fd 3, write it to fd 4); the raw-Port ping "
             "shows the sidecar's own share (msgpack, dispatch on its reader thread); the rest "
             "of `Sidecar.call` is the Elixir client (GenServer hops, msgpack, the pending map).")
    return rows


def section_seed(ctx: Context) -> list[Row]:
    ds = ctx.dataset("seed")
    rows, _ = _read_rows("2", ds, ctx, zarr_target=0.5, ts_target=None, pipe_target=None,
                         paths=DEFAULT_PATH)
    return rows


def _rss_rows(ctx: Context, ds: Dataset, jobs: dict[str, Job]) -> list[Row]:
    rows: list[Row] = []
    for path, job in jobs.items():
        rss = job.one("rss")
        extra = ds.nbytes if path == "handoff" else 4 * STREAM_FRAME_BYTES
        limit = 64 * MiB + extra
        extra_text = "the array" if path == "handoff" else "4 frames"
        target = Target("max", limit, f"≤ {limit / MiB:.0f} MiB (64 MiB + {extra_text})")
        label = "row 3 `handoff: true`" if path == "handoff" else "row 3 `handoff: false`"
        children = [c for c in rss["children"] if c.get("hwm_kib") is not None]
        binary_before = max(int(r["beam_binary_before"]) for r in job.runs())
        each = ", ".join(f"{c['hwm_kib'] / 1024:.0f}" for c in children)
        rows += [
            Row("8", f"sidecar main process, peak RSS, {label} (sampled peaks during one "
                     f"read: anonymous {rss['main_peak_anon_kib'] / 1024:.0f} MiB, shared "
                     f"memory {rss['main_peak_shmem_kib'] / 1024:.0f} MiB)",
                Series.of([rss["sidecar_hwm_kib"] * KiB]), "MiB", target=target),
            Row("8", f"sidecar + its {len(children)} child processes, peak summed PSS, {label}",
                Series.of([rss["tree_peak_pss_kib"] * KiB]), "MiB", target=target),
            Row("8", f"sidecar's child processes, sum of their peak RSS (each: {each} MiB), "
                     f"{label}",
                Series.of([sum(c["hwm_kib"] for c in children) * KiB]), "MiB"),
            Row("8", f"the BEAM, peak RSS, {label} (before the first read: "
                     f"{rss['beam_hwm_before_kib'] / 1024:.0f} MiB; binaries held before "
                     f"each timed read: at most {binary_before / MiB:.0f} MiB)",
                Series.of([rss["beam_hwm_kib"] * KiB]), "MiB"),
        ]
    ctx.note("Row 8: peak RSS is the kernel's VmHWM over the whole job (warm-up, timed runs "
             "and one more read). The child processes are the workers, the fork server and "
             "multiprocessing's resource tracker; their RSS counts the pages they share "
             "(numpy, zarr, the fork server's imports) once in each, so the summed PSS "
             "(shared pages split between their users), sampled every 5 ms from "
             "/proc/<pid>/smaps_rollup during one extra read, is the fairer total. "
             f"The BEAM holds the {ds.nbytes // MiB} MiB result.")
    return rows


def section_big(ctx: Context) -> list[Row]:
    ds = ctx.dataset("big")
    rows, jobs = _read_rows("3", ds, ctx, zarr_target=0.8, ts_target=1.2, pipe_target=1.3)
    return rows + _rss_rows(ctx, ds, jobs)


def section_sharded(ctx: Context) -> list[Row]:
    ds = ctx.dataset("sharded")
    rows, _ = _read_rows("4", ds, ctx, zarr_target=0.8, ts_target=None, pipe_target=None)
    return rows


#: How a write's data travels: the ``handoff:`` option passed to ``Array.write``
#: (by default large data is handed over through shared memory).
WRITE_PATHS = {"default": "default", "pipe": "false"}


def _write_label(path: str, job: Job, ds: Dataset) -> str:
    """Name the path a write took, from the bytes written to its port per run."""
    piped = max(int(r["pipe_bytes"]) for r in job.runs())
    how = "handoff" if piped < ds.nbytes // 2 else "pipe"
    if path == "default":
        return f"default options (the data went by {how})"
    if how == "handoff":
        return "`handoff: false`, **but the data did not go through the pipe**"
    return "`handoff: false` (pipe-streamed)"


def section_write(ctx: Context) -> list[Row]:
    import zarr

    rows: list[Row] = []
    for name in ("big", "sharded"):
        ds = ctx.dataset(name)
        zp = Series()
        baseline = inproc.ZarrWrite(ds, ctx.root)
        between = _alternate((baseline, zp))
        jobs: dict[str, Job] = {}
        targets: list[Path] = []
        for path, flag in WRITE_PATHS.items():
            mine = [ctx.root / f"elixir-write-{name}-{path}-{i}" for i in range(ctx.runs + 1)]
            targets += mine
            jobs[path] = Job("write", {**ctx.sidecar_fields(), "raw": ds.raw_path,
                                       "shape": "x".join(map(str, ds.shape)), "handoff": flag,
                                       "targets": ",".join(map(str, mine))}, between)
        for t in targets:
            data.create_empty_like(ds, t)
        try:
            for job in jobs.values():  # a BEAM each
                ctx.elixir.run([job])
            _baseline_cpu_note(ctx, f"row 5 zarr-python write of {ds.title}", baseline, zp)
            baseline.close()
            for t in targets:
                back = zarr.open_array(str(t), mode="r")[...]
                got = data.sha256_of(back)
                del back
                if got != ds.sha256:
                    raise BenchError(f"ZarrBridge write of {name} to {t}: zarr-python reads "
                                     "back different bytes")
        finally:
            for t in targets:
                shutil.rmtree(t, ignore_errors=True)
        for path, job in jobs.items():
            ours = series_from(job.runs(), "seconds")
            how = _write_label(path, job, ds)
            _cpu_note(ctx, f"row 5 write of {ds.title}, {how}", job, ours)
            rows.append(Row("5", f"full write of {ds.title}: `Array.write`, {how}", ours, "ms",
                            "zarr-python `z[...] = a`", zp,
                            Target("le", 0.8, "≤ 0.8x") if path == "default" else None))
    ctx.note("Row 5: both sides write into a freshly created empty array per run (creating "
             "it is not timed); every written array is read back by zarr-python and checked. "
             "By default `Array.write` hands data of 4 MiB or more over through a shared-memory "
             "file that the workers encode from; `handoff: false` uploads it through the pipe. "
             "The zarr-python baseline runs once between any two ZarrBridge runs, so its "
             "series holds a run for each.")
    return rows


def section_codecs(ctx: Context) -> list[Row]:
    count = 8 if ctx.quick else 32
    batch = ctx.codec_batch
    in_flight = ctx.codec_in_flight or -(-count // batch)
    rows: list[Row] = []
    worker_counts = sorted({1, ctx.workers})
    for label in data.CODEC_CONFIGS:
        items = data.prepare_codec_items(label, ctx.root, count)
        base = Series()
        numcodecs_decode = inproc.NumcodecsDecode(items)
        between = _alternate((numcodecs_decode, base))
        codec_fields = {f"codec.{k}": v for k, v in items.config.items()}
        # Every worker count with the default (results handed over through
        # shared memory when large), and the most workers with the pipe only.
        variants = [(w, True) for w in worker_counts] + [(max(worker_counts), False)]
        jobs = {v: Job("decode_many", {**ctx.sidecar_fields(v[0]), "items": items.path,
                                       "batch": batch, "in_flight": in_flight, "runs": ctx.runs,
                                       "handoff": v[1], **codec_fields},
                       between)
                for v in variants}
        erl = Job("erl_zlib", {"items": items.path, "runs": ctx.runs}) if label == "zlib" else None
        ctx.elixir.run(list(jobs.values()) + ([erl] if erl else []))
        ratio_c = len(b"".join(items.encoded)) / items.decoded_bytes
        what = f"decode 1 MiB float64 chunks, {label} (compressed to {ratio_c:.0%})"
        for (w, handoff), job in jobs.items():
            how = "" if handoff else ", `handoff: false` (by pipe)"
            secs = _checked_seconds(job, items.sha256, f"decode_many {label} {w} workers{how}")
            _cpu_note(ctx, f"row 6 {label} `decode_many` with {w} worker(s){how}", job, secs)
            tput = Series.of(items.decoded_bytes / s for s in secs.values)
            target = None
            if label == "zstd" and handoff:
                target = (Target("ge", 0.85, "≥ 0.85x") if w == 1
                          else Target("ge", 1.6, "≥ 1.6x") if w == 2 else None)
            rows.append(Row("6", f"{what}: `Codecs.decode_many`, {w} worker{'s' * (w > 1)}"
                                 f"{how}", tput, "MB/s", "numcodecs, 1 thread", base, target))
        _baseline_cpu_note(ctx, f"row 6 {label} numcodecs decode", numcodecs_decode,
                           Series.of(items.decoded_bytes / b for b in base.values))
        if erl is not None:
            secs = _checked_seconds(erl, items.sha256, "Erlang :zlib")
            tput = Series.of(items.decoded_bytes / s for s in secs.values)
            rows.append(Row("6", f"{what}: Erlang `:zlib.uncompress`, in the BEAM", tput,
                            "MB/s", "numcodecs, 1 thread", base))
    ctx.note(f"Row 6: {count} chunks of 1 MiB per run, in `decode_many` calls of {batch} "
             f"chunks, {in_flight} calls in flight at once (`Task.async_stream`); throughput is "
             "decoded bytes per second. By default each call's results (4 MiB) come back "
             "through one shared-memory file that the workers write; the `handoff: false` "
             "rows bring them through the pipe. numcodecs runs in process on one thread "
             "(Blosc with `set_nthreads(1)`).")
    return rows


def section_start(ctx: Context) -> list[Row]:
    base = Series()
    job = Job("start", {**ctx.sidecar_fields(), "runs": ctx.runs},
              _alternate((inproc.ImportTime(ctx.python), base)))
    ctx.elixir.run([job])
    ours = series_from(job.runs(), "seconds")
    workers = job.runs()[0].get("workers")
    ready = series_from(job.runs(), "first_decode_seconds")
    baseline = "`python -c 'import zarr, numcodecs'`"
    return [Row("7", f"sidecar start, `start_link` to the `hello` reply ({workers} workers)",
                ours, "ms", baseline, base, Target("le", 1.3, "≤ 1.3x")),
            Row("7", f"sidecar start, `start_link` to the first `decode_many` result "
                     f"({workers} small items: the workers must be up)",
                ready, "ms", baseline, base)]


SECTIONS: dict[str, Callable[[Context], list[Row]]] = {
    "latency": section_latency,
    "seed": section_seed,
    "big": section_big,
    "sharded": section_sharded,
    "write": section_write,
    "codecs": section_codecs,
    "start": section_start,
}
