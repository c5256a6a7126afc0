"""Summarise a py-spy profile written by ``python -m bench --profile DIR``.

    python -m bench.profile_summary DIR/01-read.txt [--top N]

The input is py-spy's ``raw`` format (collapsed stacks, one ``frame;frame;...
count`` line per distinct stack, processes as leading ``process N:"cmd"``
frames). For each process it prints its share of the samples, the functions
with the most samples on the stack (inclusive) and at the top of the stack
(self). Idle time is not sampled, so the shares are of busy time.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter, defaultdict
from pathlib import Path

_PROCESS = re.compile(r'process (\d+):"(.*?)"(?:;|$)')


def _split(stack: str) -> list[str | tuple[int, str]]:
    """Frames of one collapsed stack; a process frame (its command line may hold
    ``;``) becomes ``(pid, cmdline)``."""
    frames: list[str | tuple[int, str]] = []
    pos = 0
    while pos < len(stack):
        m = _PROCESS.match(stack, pos)
        if m:
            frames.append((int(m.group(1)), m.group(2)))
            pos = m.end()
            continue
        end = stack.find(";", pos)
        end = len(stack) if end < 0 else end
        frames.append(stack[pos:end])
        pos = end + 1
    return frames


def _role(cmdline: str) -> str:
    if "pybridge" in cmdline and "forkserver" not in cmdline:
        return "sidecar"
    if "forkserver" in cmdline:
        return "forkserver/worker"
    if "resource_tracker" in cmdline:
        return "resource tracker"
    return cmdline[:60]


def summarise(path: Path, top: int) -> str:
    inclusive: dict[str, Counter[str]] = defaultdict(Counter)
    own: dict[str, Counter[str]] = defaultdict(Counter)
    totals: Counter[str] = Counter()
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        parts = _split(stack)
        procs = [(i, f) for i, f in enumerate(parts) if isinstance(f, tuple)]
        proc = "?"
        if procs:
            last, (pid, cmdline) = procs[-1]
            proc = f"{pid} {_role(cmdline)}"
            parts = parts[last + 1:]
        frames = [f for f in parts if isinstance(f, str)]
        totals[proc] += count
        for f in set(frames):
            inclusive[proc][f] += count
        if frames:
            own[proc][frames[-1]] += count
    grand = sum(totals.values()) or 1
    out = [f"{path}: {grand} samples"]
    for proc, n in totals.most_common():
        out.append(f"\n== process {proc}: {n} samples ({n / grand:.0%})")
        out.append("  inclusive:")
        out += [f"    {c:6d} {c / n:5.0%}  {f}" for f, c in inclusive[proc].most_common(top)]
        out.append("  self:")
        out += [f"    {c:6d} {c / n:5.0%}  {f}" for f, c in own[proc].most_common(top)]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.profile_summary")
    p.add_argument("files", nargs="+", type=Path)
    p.add_argument("--top", type=int, default=12)
    args = p.parse_args(argv)
    for f in args.files:
        print(summarise(f, args.top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
