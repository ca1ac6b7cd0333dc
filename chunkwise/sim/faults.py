"""Seeded fault draws for /api/chat and /api/generate.

A request's fault depends only on (SimOptions.seed, request fingerprint, how many times that
fingerprint was received before), never on timing or concurrency, so a run is reproducible and a
retried request gets a fresh draw. u = first 8 bytes of sha256("seed:fingerprint:n") / 2**64 picks
the kind by cumulative rates in the order error, reset, stall, incomplete:

  error       HTTP 500 `RUNNER_STOPPED` at once.
  reset       headers and part of the body are sent, then the TCP connection is aborted.
  stall       the request holds its slot silently for stall_s, then is answered normally; if the
              client went away meanwhile it is recorded as 499 and not answered (Ollama cancels
              generation when the client disconnects).
  incomplete  HTTP 200 whose body never reaches `done: true` and has no metrics (Ollama's
              repeated-token abort, research ollama.md section 1).
"""

from __future__ import annotations

import hashlib

from chunkwise.sim.options import SimOptions

RUNNER_STOPPED = (
    "model runner has unexpectedly stopped, this may be due to resource limitations or an internal error, "
    "check ollama server logs for details"
)
KINDS = ("error", "reset", "stall", "incomplete")


def draw(seed: int, fingerprint: str, previous_receipts: int) -> float:
    """Uniform [0, 1) number for this receipt of this fingerprint."""
    digest = hashlib.sha256(f"{seed}:{fingerprint}:{previous_receipts}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def pick_fault(options: SimOptions, fingerprint: str, previous_receipts: int) -> str | None:
    """The fault kind for this receipt, or None."""
    rates = (options.fail_rate, options.reset_rate, options.stall_rate, options.incomplete_rate)
    if not any(rates):
        return None
    u = draw(options.seed, fingerprint, previous_receipts)
    edge = 0.0
    for kind, rate in zip(KINDS, rates):
        edge += rate
        if u < edge:
            return kind
    return None
