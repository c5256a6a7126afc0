"""Summaries of repeated measurements: median, spread and ratios.

Every comparison in the benchmark is a pair of :class:`Series` measured in the
same run. A series holds one value per run (seconds for times, bytes per
second for throughputs, bytes for memory); the table shows its median and its
min–max spread, and the ratio of two medians.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

__all__ = ["Series", "percentile"]


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0–100) with linear interpolation, like numpy's default."""
    if not values:
        raise ValueError("percentile of no values")
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


@dataclass
class Series:
    """One value per run of a measurement."""

    values: list[float] = field(default_factory=list)

    @classmethod
    def of(cls, values: Iterable[float]) -> Series:
        return cls([float(v) for v in values])

    def add(self, value: float) -> None:
        self.values.append(float(value))

    def __len__(self) -> int:
        return len(self.values)

    @property
    def median(self) -> float:
        return percentile(self.values, 50)

    @property
    def low(self) -> float:
        return min(self.values)

    @property
    def high(self) -> float:
        return max(self.values)

    @property
    def iqr(self) -> tuple[float, float]:
        return percentile(self.values, 25), percentile(self.values, 75)

    def ratio_to(self, baseline: Series) -> float:
        """Median of this series over the median of ``baseline``."""
        return self.median / baseline.median
