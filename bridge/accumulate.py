"""Delta to cumulative: adding one delta point onto a series' running total.

A push receiver (OTLP) may get sums and histograms with delta temporality; Prometheus only
takes cumulative ones, so the pipeline keeps the running total as the series' value and adds
each delta that continues it (``Pipeline.push(..., delta=True)``), as the OpenTelemetry →
Prometheus compatibility rules say. The total lives in the series itself: no second copy.

Exponential histograms of different scales are merged at the coarser scale (each bucket index
``i`` at scale ``s`` is bucket ``i >> (s - s')`` at scale ``s'``), as the OTel SDK merges them.
"""

from __future__ import annotations

from bridge.api import ExponentialHistogramValue, HistogramValue

__all__ = ["MAX_BUCKETS", "add_delta", "downscale"]

#: The most buckets (per sign) a merged exponential histogram spans; wider ones are downscaled
#: until they fit, as the SDK's aggregation keeps within its max_size (160 by default).
MAX_BUCKETS = 4096


def add_delta(total: float | HistogramValue | ExponentialHistogramValue,
              delta: float | HistogramValue | ExponentialHistogramValue
              ) -> float | HistogramValue | ExponentialHistogramValue:
    """``total`` plus ``delta`` (of the same type); ValueError when they cannot be added (a
    histogram's bounds changed, say: the caller starts a new total then)."""
    if isinstance(delta, HistogramValue):
        if not isinstance(total, HistogramValue) or total.bounds != delta.bounds:
            raise ValueError("histogram bucket bounds changed")
        return HistogramValue(
            total.bounds, tuple(a + b for a, b in zip(total.bucket_counts, delta.bucket_counts, strict=True)),
            total.sum + delta.sum, total.count + delta.count, _least(total.min, delta.min),
            _most(total.max, delta.max))
    if isinstance(delta, ExponentialHistogramValue):
        if not isinstance(total, ExponentialHistogramValue):
            raise ValueError("not an exponential histogram")
        return _merge_exponential(total, delta)
    if isinstance(total, (HistogramValue, ExponentialHistogramValue)):
        raise ValueError("not a number")
    return total + delta


def _least(a: float | None, b: float | None) -> float | None:
    return b if a is None else a if b is None else min(a, b)


def _most(a: float | None, b: float | None) -> float | None:
    return b if a is None else a if b is None else max(a, b)


def downscale(offset: int, counts: tuple[int, ...], by: int) -> tuple[int, tuple[int, ...]]:
    """Buckets ``(offset, counts)`` at a scale ``by`` steps coarser: (new offset, new counts)."""
    if by <= 0 or not counts:
        return offset, counts
    first = offset >> by
    out = [0] * (((offset + len(counts) - 1) >> by) - first + 1)
    for i, c in enumerate(counts):
        out[((offset + i) >> by) - first] += c
    return first, tuple(out)


def _span(oa: int, ca: tuple[int, ...], ob: int, cb: tuple[int, ...], by_a: int, by_b: int) -> int:
    """How many buckets ``a`` and ``b``, downscaled by ``by_a`` and ``by_b``, span together."""
    ends = [(o >> by, (o + len(c) - 1) >> by) for o, c, by in ((oa, ca, by_a), (ob, cb, by_b)) if c]
    return max(e for _, e in ends) - min(s for s, _ in ends) + 1 if ends else 0


def _add_buckets(a: tuple[int, tuple[int, ...]], b: tuple[int, tuple[int, ...]]) -> tuple[int, tuple[int, ...]]:
    (oa, ca), (ob, cb) = a, b
    if not ca:
        return ob, cb
    if not cb:
        return oa, ca
    lo = min(oa, ob)
    out = [0] * (max(oa + len(ca), ob + len(cb)) - lo)
    for o, cs in ((oa, ca), (ob, cb)):
        for i, c in enumerate(cs):
            out[o - lo + i] += c
    return lo, tuple(out)


def _merge_exponential(a: ExponentialHistogramValue, b: ExponentialHistogramValue) -> ExponentialHistogramValue:
    scale = min(a.scale, b.scale)
    while scale > -10 and (_span(a.positive_offset, a.positive_counts, b.positive_offset, b.positive_counts,
                                 a.scale - scale, b.scale - scale) > MAX_BUCKETS
                           or _span(a.negative_offset, a.negative_counts, b.negative_offset, b.negative_counts,
                                    a.scale - scale, b.scale - scale) > MAX_BUCKETS):
        scale -= 1
    pos = _add_buckets(downscale(a.positive_offset, a.positive_counts, a.scale - scale),
                       downscale(b.positive_offset, b.positive_counts, b.scale - scale))
    neg = _add_buckets(downscale(a.negative_offset, a.negative_counts, a.scale - scale),
                       downscale(b.negative_offset, b.negative_counts, b.scale - scale))
    if len(pos[1]) > MAX_BUCKETS or len(neg[1]) > MAX_BUCKETS:
        raise ValueError(f"the merged exponential histogram spans more than {MAX_BUCKETS} buckets")
    total_sum = None if a.sum is None or b.sum is None else a.sum + b.sum
    return ExponentialHistogramValue(
        scale=scale, zero_count=a.zero_count + b.zero_count, positive_offset=pos[0], positive_counts=pos[1],
        negative_offset=neg[0], negative_counts=neg[1], count=a.count + b.count, sum=total_sum,
        zero_threshold=max(a.zero_threshold, b.zero_threshold), min=_least(a.min, b.min), max=_most(a.max, b.max))
