"""The results table: one :class:`Row` per comparison, rendered as markdown."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from bench.stats import Series

__all__ = ["Row", "Target", "render"]

MiB = 1024 * 1024
Unit = Literal["ms", "µs", "s", "MB/s", "MiB"]


@dataclass(frozen=True)
class Target:
    """A target on a row's ratio (``"le"``/``"ge"``) or on its absolute value (``"max"``)."""

    op: Literal["le", "ge", "max"]
    value: float
    text: str

    def met(self, ratio: float | None, value: float) -> bool:
        if self.op == "max":
            return value <= self.value
        assert ratio is not None
        return ratio <= self.value if self.op == "le" else ratio >= self.value


@dataclass(frozen=True)
class Row:
    """One comparison: ZarrBridge's series against a baseline measured in the same run.

    For times the ratio is ZarrBridge / baseline (lower is better); for
    throughputs (``MB/s``) it is ZarrBridge / baseline too, so higher is
    better.
    """

    row: str
    what: str
    ours: Series
    unit: Unit
    baseline_name: str = "—"
    baseline: Series | None = None
    target: Target | None = None
    note: str = ""

    @property
    def ratio(self) -> float | None:
        if self.baseline is None:
            return None
        return self.ours.ratio_to(self.baseline)

    @property
    def met(self) -> bool | None:
        if self.target is None:
            return None
        return self.target.met(self.ratio, self.ours.median)


_SCALE: dict[str, float] = {"ms": 1e3, "µs": 1.0, "s": 1.0, "MB/s": 1e-6, "MiB": 1 / MiB}


def _fmt_num(x: float) -> str:
    if x >= 100:
        return f"{x:.0f}"
    if x >= 10:
        return f"{x:.1f}"
    return f"{x:.2f}"


def _fmt(series: Series | None, unit: str) -> str:
    if series is None or not len(series):
        return "—"
    k = _SCALE[unit]
    med = _fmt_num(series.median * k)
    if len(series) == 1:
        return f"{med} {unit}"
    return f"{med} {unit} ({_fmt_num(series.low * k)}–{_fmt_num(series.high * k)})"


def _met_text(met: bool | None) -> str:
    return {None: "", True: "**yes**", False: "**NO**"}[met]


def _tool_version(cmd: list[str]) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    return (out.stdout or out.stderr).strip().splitlines()[-1] if (out.stdout or out.stderr) else "?"


def environment_lines(python: str) -> list[str]:
    """Versions and machine facts for the table's header."""
    import numcodecs
    import numpy
    import zarr

    try:
        import tensorstore

        ts_version = getattr(tensorstore, "__version__", None) or _dist_version("tensorstore")
    except ImportError:
        ts_version = "not installed"
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    otp = _tool_version(["erl", "-noshell", "-eval",
                         'io:format("~s~n", [erlang:system_info(otp_release)]), halt().'])
    elixir = _tool_version(["elixir", "--short-version"])
    return [
        f"- machine: {os.cpu_count()} CPUs ({cpu}), {platform.system()} {platform.release()}; "
        f"load average at the start {load_average()}",
        f"- Python {platform.python_version()} ({python}), zarr {zarr.__version__}, "
        f"numcodecs {numcodecs.__version__}, numpy {numpy.__version__}, tensorstore {ts_version}",
        f"- Erlang/OTP {otp}, Elixir {elixir}",
    ]


def _dist_version(name: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "?"


def load_average() -> str:
    """The 1-minute load average, from /proc/loadavg."""
    try:
        with open("/proc/loadavg") as f:
            return f.read().split()[0]
    except OSError:
        return "?"


def render(rows: list[Row], header: list[str], notes: list[str]) -> str:
    """The markdown document: a header, the table, and notes."""
    out = ["# ZarrBridge benchmark", "",
           f"Run {time.strftime('%Y-%m-%d %H:%M:%S %Z')} by `python -m {' '.join(['bench'] + sys.argv[1:])}`.",
           ""]
    out += header
    out += ["",
            "Each cell is the median over the runs, with (min–max). Ratio = ZarrBridge / "
            "baseline, of medians: for times lower is better, for throughputs (MB/s) higher "
            "is better. Every timed result was checked by SHA-256 against the in-process read.",
            "",
            "| row | measurement | ZarrBridge | baseline | baseline value | ratio | target | met |",
            "|---|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: int(r.row)):
        ratio = "—" if r.ratio is None else f"{r.ratio:.2f}x"
        target = r.target.text if r.target else ""
        what = r.what + (f" ({r.note})" if r.note else "")
        out.append(f"| {r.row} | {what} | {_fmt(r.ours, r.unit)} | {r.baseline_name} | "
                   f"{_fmt(r.baseline, r.unit)} | {ratio} | {target} | {_met_text(r.met)} |")
    targets = [r for r in rows if r.target is not None]
    missed = [r for r in targets if r.met is False]
    out += ["", f"Targets met: {len(targets) - len(missed)} of {len(targets)}."]
    if notes:
        out += ["", "Notes:", ""] + [f"- {n}" for n in notes]
    return "\n".join(out) + "\n"


def series_from(records: list[dict[str, object]], key: str,
                convert: Callable[[float], float] = float) -> Series:
    """A series of ``key`` over run records."""
    return Series.of(convert(float(r[key])) for r in records)  # type: ignore[arg-type]
