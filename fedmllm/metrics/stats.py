"""Summaries of one measurement over seeds: mean, sample std and a Student-t confidence interval.

With n runs at different seeds, the 95% interval of the mean is ``mean ± t(0.975, n-1) * s / sqrt(n)``
(s the sample standard deviation, ddof = 1). A *paired* difference (method A − method B on the same
seeds, so the same data splits and initial draws) is summarised the same way over the per-seed
differences, which removes the variation both share. One run has no interval (``half`` is None).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Optional

CONFIDENCE = 0.95


def t_quantile(df: int, confidence: float = CONFIDENCE) -> float:
    """The two-sided Student-t critical value t((1 + confidence) / 2, df)."""
    from scipy.stats import t

    if df < 1:
        raise ValueError(f"t_quantile needs df >= 1, got {df}")
    return float(t.ppf((1 + confidence) / 2, df))


@dataclass(frozen=True)
class Summary:
    """``n`` values: their mean, sample std (None for one value) and CI half-width (None for one)."""

    n: int
    mean: float
    std: Optional[float]
    half: Optional[float]
    values: tuple[float, ...]

    @property
    def low(self) -> Optional[float]:
        return None if self.half is None else self.mean - self.half

    @property
    def high(self) -> Optional[float]:
        return None if self.half is None else self.mean + self.half

    def excludes_zero(self) -> Optional[int]:
        """+1 / -1 when the whole interval is above / below 0, 0 when it holds 0, None without one."""
        if self.half is None:
            return None
        return 1 if self.low > 0 else -1 if self.high < 0 else 0

    def fmt(self, spec: str = "+.1f", std: bool = True) -> str:
        """``mean ± half [low, high]``-style text: "+12.3 ± 4.5 (sd 2.0)"; one value alone as is."""
        if self.half is None:
            return format(self.mean, spec)
        text = f"{format(self.mean, spec)} ± {format(self.half, spec.lstrip('+'))}"
        return f"{text} (sd {format(self.std, spec.lstrip('+'))})" if std else text

    def to_dict(self) -> dict:
        return {"n": self.n, "mean": self.mean, "std": self.std, "ci95_half": self.half, "ci95_low": self.low,
                "ci95_high": self.high, "values": list(self.values)}


def summarize(values: Iterable[Optional[float]]) -> Optional[Summary]:
    """The summary of the defined, finite values (None entries are measures a run did not define);
    None when there is none. A non-finite value is an error: it must never reach a report."""
    xs = []
    for v in values:
        if v is None:
            continue
        v = float(v)
        if not math.isfinite(v):
            raise ValueError(f"summarize: non-finite value {v} among the seeds' measurements")
        xs.append(v)
    if not xs:
        return None
    n = len(xs)
    mean = math.fsum(xs) / n
    if n == 1:
        return Summary(1, mean, None, None, tuple(xs))
    std = math.sqrt(math.fsum((x - mean) ** 2 for x in xs) / (n - 1))
    return Summary(n, mean, std, t_quantile(n - 1) * std / math.sqrt(n), tuple(xs))


def paired(a: dict, b: dict) -> Optional[Summary]:
    """The summary of ``a[seed] - b[seed]`` over the seeds both define."""
    common = [s for s in a if s in b and a[s] is not None and b[s] is not None]
    return summarize(a[s] - b[s] for s in common)
