"""The text `chunkwise plan` prints for a `Plan` (`chunkwise.plan.figures`): one labelled line per
check, the rejects, the requests too long for the context and the advice."""

from __future__ import annotations

from typing import TYPE_CHECKING

from chunkwise.plan.chunks import FILL

if TYPE_CHECKING:
    from chunkwise.plan.figures import Plan


def _duration(seconds: float) -> str:
    h, rem = divmod(round(seconds), 3600)
    return f"{h}h {rem // 60:02d}m {rem % 60:02d}s"


def render_lines(p: Plan) -> list[str]:
    out = [f"input        {p.input_path}: {p.rows} rows, {p.accepted} accepted, {p.rejected} rejected"]
    out += [f"  reject     row {r.row} id {r.id!r}: {r.reason}" for r in p.first_rejects]
    if p.rejected > len(p.first_rejects):
        out.append(f"  ...        {p.rejected - len(p.first_rejects)} more rejects")
    t = p.prompt_tokens
    if t is not None:
        out.append(f"prompts      estimated tokens min {t.min}, p50 {t.p50}, mean {t.mean}, p95 {t.p95}, max {t.max} "
                   f"({p.chars_per_token:g} chars/token)")
    out.append(f"system       {p.system_prompt_tokens} tokens; mean request {p.mean_request_tokens} tokens "
               f"(prompt + {p.expected_answer_tokens} expected answer)")
    how = (f"computed: floor({FILL} x ({p.budget_tokens} {p.budget_source} - {p.system_prompt_tokens}) / "
           f"{p.mean_request_tokens})" if p.chunk_size_computed else "given")
    out.append(f"chunks       {p.chunk_count} chunks of {p.chunk_sizes[0]}-{p.chunk_sizes[1]} requests; "
               f"chunk size {p.chunk_size} ({how})")
    if p.chunk_size_computed and p.mode == "conversation":  # chunkwise.run.density
        out.append("             (a run without --chars-per-token sizes them from the server's count of a sample of "
                   "the rows, so its chunks may differ)")
    out.append(f"mode         {p.mode}, model {p.model}, num_ctx {p.num_ctx}, parallel {p.parallel}, "
               f"num_predict {p.num_predict}")
    if p.conversation_peak_tokens is not None:
        out.append(f"conversation about {p.conversation_peak_tokens} tokens at a chunk's end "
                   f"(trim at {p.trim_at_tokens})")
    layout = "Ollama's Go-runner layout" if p.engine == "ollama" else f"{p.engine} layout"
    src = f"model_info from {p.model_info_source}, {layout}"
    if p.server_slots is not None or p.server_slot_ctx is not None:
        out.append(f"server       {p.engine}: {p.server_slots or '?'} slots of {p.server_slot_ctx or '?'} tokens")
    weights = f"; weights {p.weights_mib:,.0f} MiB" if p.weights_mib is not None else ""
    if p.kv_mib_per_token is not None:
        out.append(f"kv cache     {p.kv_mib_per_token:.4f} MiB/token ({p.kv_cache_type}, {src}); reserved "
                   f"{p.kv_reserved_mib:,.0f} MiB for num_ctx {p.num_ctx} x parallel {p.parallel}{weights}")
    else:
        out.append(f"kv cache     ?: {p.kv_reason}")
    if p.memory_mib_per_token is not None and p.kv_mib_per_token is not None:
        out.append(f"memory       {p.memory_mib_per_token:.4f} MiB per num_ctx token and slot = KV "
                   f"{p.kv_mib_per_token:.4f} + attention mask {p.mask_mib_per_token or 0:.4f} (f16, num_batch "
                   f"{p.batch}, in the compute graph; assumes flash attention): what the server's memory grows by")
    out.append(f"fits vram    {'yes' if p.fits else 'no' if p.fits is False else '?'}: {p.fit_detail}")
    if p.too_long_count:
        ids = ", ".join(repr(i) for i in p.too_long_ids)
        more = f" and {p.too_long_count - len(p.too_long_ids)} more" if p.too_long_count > len(p.too_long_ids) else ""
        out.append(f"too long     {p.too_long_count} requests: {ids}{more}")
    out.append(f"eta          {_duration(p.eta_s) if p.eta_s is not None else '?'}: {p.eta_detail}")
    out += [f"advice       {a}" for a in p.advice]
    return out
