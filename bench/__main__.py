"""``python -m bench [SECTION ...] [--runs N] [--quick]``: run the benchmark, print the table.

Run it from the repository root (``make bench`` does). The table also goes to
``bench/results/latest.md``. See ``bench/README.md``.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

from bench.inproc import BenchError
from bench.report import Row, environment_lines, load_average, render
from bench.runner import REPO, ElixirRunner
from bench.sections import SECTIONS, Context

RESULTS = REPO / "bench" / "results" / "latest.md"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench",
        description="ZarrBridge against in-process zarr-python, tensorstore and numcodecs, "
                    "side by side in one run.")
    p.add_argument("sections", nargs="*", default=["all"], metavar="SECTION",
                   help="all (default) or any of: " + ", ".join(SECTIONS))
    p.add_argument("--runs", type=int, default=5,
                   help="timed runs per measurement, after one warm-up (default 5)")
    p.add_argument("--quick", action="store_true",
                   help="a 32 MiB array instead of 256 MiB, fewer calls and chunks (smoke runs)")
    p.add_argument("--workers", type=int, default=None,
                   help="the sidecar's worker count (default: the number of CPUs)")
    p.add_argument("--codec-batch", type=int, default=4, metavar="N",
                   help="row 6: chunks per decode_many call (default 4)")
    p.add_argument("--codec-in-flight", type=int, default=0, metavar="N",
                   help="row 6: decode_many calls in flight at once (default: all)")
    p.add_argument("--data-dir", type=Path, default=None,
                   help="where to write the arrays (default: a temporary directory, removed "
                        "at the end); an existing directory is reused and kept")
    p.add_argument("--output", type=Path, default=RESULTS,
                   help=f"where to write the table (default {RESULTS.relative_to(REPO)})")
    p.add_argument("--verbose", "-v", action="store_true", help="show the Elixir side's log")
    p.add_argument("--profile", type=Path, default=None, metavar="DIR",
                   help="record every sidecar (and its workers) with py-spy into DIR, as "
                        "collapsed stacks (needs py-spy); the timings then include its cost")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    names = list(SECTIONS) if "all" in args.sections else args.sections
    unknown = [n for n in names if n not in SECTIONS]
    if unknown:
        print(f"unknown section(s): {', '.join(unknown)}; choose from all, "
              f"{', '.join(SECTIONS)}", file=sys.stderr)
        return 2
    if args.runs < 1:
        print("--runs must be at least 1", file=sys.stderr)
        return 2

    if shutil.which("mix") is None:
        print("bench: `mix` is not on the PATH (scripts/setup.sh installs Elixir)",
              file=sys.stderr)
        return 2
    python = sys.executable
    keep = args.data_dir is not None
    root = args.data_dir or Path(tempfile.mkdtemp(prefix="zarrbridge-bench-"))
    root = root.resolve()
    root.mkdir(parents=True, exist_ok=True)
    ctx = Context(root=root, runs=args.runs, quick=args.quick, python=python,
                  elixir=ElixirRunner(python, verbose=args.verbose,
                                      profile_dir=args.profile and args.profile.resolve()))
    if args.workers:
        ctx.workers = args.workers
    ctx.codec_batch = max(1, args.codec_batch)
    ctx.codec_in_flight = max(0, args.codec_in_flight)

    env_lines = environment_lines(python)
    rows: list[Row] = []
    failed: list[str] = []
    started = time.monotonic()
    try:
        for name in names:
            t0 = time.monotonic()
            print(f"==> {name}", file=sys.stderr, flush=True)
            try:
                rows += SECTIONS[name](ctx)
            except Exception as e:
                # A failed section (a wrong checksum, a crash on the Elixir side) is
                # reported and the others still run; the exit status says so.
                if not isinstance(e, BenchError):
                    traceback.print_exc()
                print(f"bench: section {name} FAILED: {e}", file=sys.stderr, flush=True)
                failed.append(name)
                first_line = str(e).splitlines()[0] if str(e) else type(e).__name__
                ctx.note(f"**Section `{name}` failed**: {first_line}")
                continue
            print(f"    {name} took {time.monotonic() - t0:.1f} s", file=sys.stderr, flush=True)
    finally:
        if not keep:
            shutil.rmtree(root, ignore_errors=True)

    header = env_lines + [
        f"- runs: {args.runs} timed runs per measurement after one warm-up; sidecar workers: "
        f"{ctx.workers}; {'quick mode (32 MiB array)' if args.quick else '256 MiB array'}",
        "- baselines at their defaults: zarr-python with its default async concurrency "
        "(`async.concurrency` as shipped), tensorstore with a default context; both in "
        "process on already opened arrays, like ZarrBridge's `Array.read` on an opened array",
        f"- sections: {', '.join(names)}; total {time.monotonic() - started:.0f} s; "
        f"load average at the end {load_average()} (the baselines alternate run by run "
        "with ZarrBridge, so both see the same load)",
    ]
    table = render(rows, header + ctx.data_lines(), ctx.notes)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(table)
    print(table)
    print(f"(written to {args.output})", file=sys.stderr)
    if failed:
        print(f"bench: failed sections: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
