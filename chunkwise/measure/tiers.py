"""Memory against num_ctx, one line per batch tier: the fit of `chunkwise measure`.

A runner's compute buffers depend on its batch. Before v0.30 Ollama's batch is 512 whatever the context
(`min(512, num_ctx)`), so the readings lie on one line. From v0.30 Ollama picks num_batch by the effective
context (512 up to 4,096 tokens, 1,024 up to 32,768, 2,048 above; lowered while memory is tight:
`chunkwise.ollama.compute`), and each step adds buffers of a size Ollama does not report: its own estimate
(768 MiB, 2 GiB) is what it plans with, not what the runner allocates. A line through readings of several
tiers is biased by the steps, and subtracting the estimate only moves the bias (issue 18, research
ollama-fidelity-audit-2.md M). So the slope is measured within one tier, the main one (the most distinct
contexts; the larger batch on a tie, the tier of large contexts), and every other tier is reported as what it
adds to that line at its contexts: a line of its own with two or more contexts, an offset with one. No
estimate is subtracted from any reading.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from chunkwise.measure.fit import Fit, fit_line


@dataclass(frozen=True)
class Tier:
    """The readings of one batch size (tokens): their contexts, their own line (two or more distinct contexts),
    and their mean distance from the main line, MiB (0 for the main tier)."""

    batch: int
    contexts: tuple[int, ...]
    fit: Fit | None
    offset_mib: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class TierFit:
    """The main tier's line and every tier's place against it."""

    main: Fit | None
    main_batch: int | None
    tiers: tuple[Tier, ...] = field(default=())

    def tier(self, batch: int) -> Tier | None:
        return next((t for t in self.tiers if t.batch == batch), None)

    def step_mib(self, batch: int, num_ctx: int) -> float | None:
        """Measured memory of tier `batch` at `num_ctx` less the main line there, MiB; None when that tier was
        not measured. A larger batch never needs less memory: its step is at least 0."""
        t = self.tier(batch)
        if t is None or self.main is None or self.main_batch is None:
            return None
        if batch == self.main_batch:
            return 0.0
        step = t.fit.predict(num_ctx) - self.main.predict(num_ctx) if t.fit is not None else t.offset_mib
        return max(step, 0.0) if batch > self.main_batch else step


def fit_tiers(points: Sequence[tuple[int, float, int]]) -> TierFit:
    """`points`: (num_ctx tokens, memory MiB, batch tokens) per reading."""
    by_batch: dict[int, list[tuple[int, float]]] = {}
    for x, y, batch in points:
        by_batch.setdefault(batch, []).append((x, y))

    def rank(batch: int) -> tuple[int, int]:
        return len({x for x, _ in by_batch[batch]}), batch

    main_batch = max(by_batch, key=rank, default=None)
    if main_batch is None or rank(main_batch)[0] < 2:
        return TierFit(None, main_batch, tuple(
            Tier(b, tuple(sorted(x for x, _ in v)), None, 0.0) for b, v in sorted(by_batch.items())))
    main = fit_line([x for x, _ in by_batch[main_batch]], [y for _, y in by_batch[main_batch]])
    assert main is not None  # two distinct contexts
    tiers = []
    for batch, readings in sorted(by_batch.items()):
        xs, ys = [x for x, _ in readings], [y for _, y in readings]
        own = main if batch == main_batch else fit_line(xs, ys)
        offset = 0.0 if batch == main_batch else sum(y - main.predict(x) for x, y in readings) / len(readings)
        tiers.append(Tier(batch, tuple(sorted(xs)), own, offset))
    return TierFit(main, main_batch, tuple(tiers))
