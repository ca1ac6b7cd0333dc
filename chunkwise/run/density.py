"""Conversation chunk sizes from the server's own token count of the input, not from a characters-per-token
guess (issue 19 item 7).

A conversation chunk is one chat that must fit num_ctx (`chunkwise.plan.chunks`: 0.8 x num_ctx over the mean
tokens per request). At the default 4 characters per token, dense text (code at ~2.2 characters per server
token, digits at 1, Chinese at ~1.8) gets chunks two to four times too long for the context: every
conversation fills num_ctx part way through and trims from then on, and each trim re-evaluates the kept
history (`chunkwise.run.conversation`). Prose at ~6 characters per token gets chunks shorter than it could.

So a new conversation run asks the server to count a sample of its own rows before it cuts the chunks: one chat
whose one user message is the text of accepted rows taken in `SAMPLE_WINDOWS` runs spread over the input, at
most `SAMPLE_CHARS` characters and a quarter of num_ctx (text at two tokens per character still fits half the
context, where no server cuts), answered with one token (`num_predict` 1). Its `prompt_eval_count` less the
template's estimated tokens (`chunkwise.tokens`) gives the sample's characters per token, which sizes the
chunks. The request carries the run's num_ctx and fields, so it loads the model as the run will (no reload).

When: conversation mode, a computed chunk size (no `chunk_size`) and no `chars_per_token` given (a user's
ratio is used as given), and only if the answer could change the plan: when the chunk count is the same at
the densest and the sparsest plausible ratio (1 and `MAX_PLAUSIBLE_CHARS_PER_TOKEN` characters per token),
nothing is sent.

Kept: the ratio and where it came from are the manifest's `chunk_plan.sizing`, so a resume cuts the same
chunks without asking again; the CLI's preflight and the flow after it share the count through the run
directory's `token_sample.json` (one request per run). The conversation trimmer keeps the run's
`chars_per_token` for its first-turn guess: from the second turn on it predicts from the server's counts.

A count that fails (a server error, a refusal, a timeout, a sample too small to say anything) never stops the
run: the chunks are cut at the configured ratio, with a line in the log saying why.
"""

from __future__ import annotations

from contextlib import closing
from typing import Any

from chunkwise.backend import ChatOptions, ChatRequest
from chunkwise.errors import LLMError
from chunkwise.inputs.stage import StagedInput, read_requests
from chunkwise.logs import RunLogger, logger
from chunkwise.plan import chunks as planning
from chunkwise.run.context import RunContext
from chunkwise.servers import backend_for
from chunkwise.settings import get_settings
from chunkwise.store.files import read_json, write_json_atomic
from chunkwise.store.layout import RunPaths
from chunkwise.tokens import GENERATION_PROMPT_TOKENS, MAX_PLAUSIBLE_CHARS_PER_TOKEN, MESSAGE_OVERHEAD_TOKENS

#: Characters of row text the sample holds at most (about 1,000 tokens of prose: a few ms of prefill on a GPU).
SAMPLE_CHARS = 4000
#: Runs of consecutive rows the sample is taken from, spread evenly over the input.
SAMPLE_WINDOWS = 8
#: A sample shorter than this says too little beside the template's own tokens; the ratio stays as configured.
MIN_SAMPLE_CHARS = 200
#: The densest ratio the plan is checked against (digits: one token per character).
DENSEST_CHARS_PER_TOKEN = 1.0
#: The ratios a count may give, characters per token (outside: a template or server oddity, not the text).
RATIO_RANGE = (0.5, 10.0)
SEPARATOR = "\n\n"


def log() -> RunLogger:
    return logger("chunkwise.run.density")


def sizing_for(ctx: RunContext, staged: StagedInput, existing: dict[str, Any] | None) -> dict[str, Any] | None:
    """The manifest's `chunk_plan.sizing` for this run (see the module docstring), or None: chunks are sized at
    `ctx.chars_per_token`. A resume takes what its manifest recorded and sends nothing."""
    if existing is not None:
        sizing = (existing.get("chunk_plan") or {}).get("sizing")
        return dict(sizing) if sizing else None
    p = ctx.params
    if p.mode != "conversation" or p.chunk_size is not None or "chars_per_token" in p.model_fields_set:
        return None
    if not plan_can_change(ctx, staged):
        return None
    path = RunPaths(ctx.dir).token_sample
    key = {"input_fingerprint": ctx.input_fingerprint, "api": p.api, "model": p.model, "model_digest": ctx.model_digest}
    if path.exists():
        cached = read_json(path)
        if cached.get("key") == key:  # this run's preflight counted it
            sizing = cached.get("sizing")
            return dict(sizing) if sizing else None
    sizing = count_sample(ctx, staged)
    write_json_atomic(path, {"key": key, "sizing": sizing})
    return sizing


def plan_can_change(ctx: RunContext, staged: StagedInput) -> bool:
    """Whether the chunk count differs between the densest and the sparsest plausible ratio."""
    counts = set()
    for ratio in (DENSEST_CHARS_PER_TOKEN, MAX_PLAUSIBLE_CHARS_PER_TOKEN):
        try:
            size, _ = planning.chunk_size_for(staged, ctx.params, system_prompt=ctx.system_prompt,
                                              chars_per_token=ratio)
        except ValueError:  # the system prompt alone fills the budget at this ratio: the count decides
            return True
        counts.add(planning.chunk_count(staged.accepted, size, planning.chunk_multiple(ctx.params)))
    return len(counts) > 1


def sample_text(ctx: RunContext, staged: StagedInput) -> tuple[str, int]:
    """(the sample, the rows it draws on): whole rows' prompts from `SAMPLE_WINDOWS` evenly spaced runs, each
    run up to its share of the budget (the last row of a run cut to fit)."""
    budget = min(SAMPLE_CHARS, ctx.params.num_ctx // 4)
    n = staged.accepted
    windows = max(1, min(SAMPLE_WINDOWS, n))
    share = budget // windows
    texts: list[str] = []
    rows = 0
    for w in range(windows):
        start = w * n // windows
        stop = min(n, start + max(1, share // 16))  # rows of at least 16 characters fill the share
        room = share
        for prompt in read_requests(RunPaths(ctx.dir).requests, start, stop)["prompt"].to_list():
            if room <= 0:
                break
            text = str(prompt or "")[:room]
            if text:
                texts.append(text)
                rows += 1
                room -= len(text) + len(SEPARATOR)
    return SEPARATOR.join(texts), rows


def count_sample(ctx: RunContext, staged: StagedInput) -> dict[str, Any] | None:
    """Ask the server to count the sample; the sizing it supports, or None (logged) when it says nothing."""
    text, rows = sample_text(ctx, staged)
    if len(text) < MIN_SAMPLE_CHARS:
        log().info("conversation chunks sized at %g characters per token: the rows hold too little text (%d "
                   "characters sampled) for the server's count to say more", ctx.chars_per_token, len(text))
        return None
    p, settings = ctx.params, get_settings()
    backend = backend_for(p.api)
    request = ChatRequest(p.model, [{"role": "user", "content": text}],
                          ChatOptions(p.num_ctx, 1, p.temperature, p.seed), None,
                          backend.request_extras(think=ctx.think, keep_alive=p.keep_alive))
    try:
        with closing(backend.client(ctx.host, settings, connect_timeout_s=settings.connect_timeout_s,
                                    read_timeout_s=settings.read_timeout_s)) as client:
            counted = client.chat(request).prompt_eval_count
    except LLMError as exc:
        log().warning("conversation chunks sized at %g characters per token (the configured ratio): the server "
                      "could not count a sample of the rows: %s", ctx.chars_per_token, exc)
        return None
    tokens = counted - MESSAGE_OVERHEAD_TOKENS - GENERATION_PROMPT_TOKENS
    ratio = len(text) / tokens if tokens > 0 else 0.0
    if not RATIO_RANGE[0] <= ratio <= RATIO_RANGE[1]:
        log().warning("conversation chunks sized at %g characters per token (the configured ratio): the server "
                      "counted %d tokens for %d characters of the rows, which no tokenizer gives",
                      ctx.chars_per_token, counted, len(text))
        return None
    sizing = {"chars_per_token": round(ratio, 3), "source": "server count", "sample_chars": len(text),
              "sample_rows": rows, "server_tokens": counted}
    log().info("conversation chunks sized at %.2f characters per token: the server counted %d tokens for %d "
               "characters from %d rows (the configured ratio is %g)", ratio, counted, len(text), rows,
               ctx.chars_per_token)
    return sizing
