"""measure.md of `chunkwise measure --local-engine`: llama-server restarted per context; memory at load
(the reservation) and after one answer, in KiB per context token next to the KV formula."""

from __future__ import annotations

from chunkwise.measure.output import _gpu_line, _num
from chunkwise.measure.report import MeasureReport

MIB_KIB = 1024  # KiB per MiB


def render_engine_markdown(report: MeasureReport) -> str:
    """measure.md of `--local-engine`: llama-server restarted per context, memory at load and after."""
    r = report
    lines = [f"# chunkwise measure: {r.model} on llama-server", ""]
    lines.append(f"- Server: {r.server_version}, {r.host}")
    lines.append(f"- Memory source: **{r.vram_source_text}**")
    lines.append(f"- {_gpu_line(r.gpu)}")
    lines.append(f"- Slots {r.parallel} (`-np`), KV cache type {r.kv_cache_type}; num_ctx is tokens per slot, the "
                 f"server ran with `-c num_ctx x {r.parallel}`")
    if r.fit:
        r2 = "n/a (flat)" if r.fit.r2 is None else f"{r.fit.r2:.5f}"
        lines.append(f"- Measured at load (the reservation): **{r.fit.slope_mib_per_token * MIB_KIB:.3f} KiB per "
                     f"context token** ({r.fit.slope_mib_per_token:.6f} MiB, all slots), intercept "
                     f"{r.fit.intercept_mib:.1f} MiB, r^2 {r2}, {r.fit.points} points")
    else:
        lines.append("- Measured: no fit (fewer than two usable contexts)")
    if r.fit_after is not None:
        lines.append(f"- After one answer: {r.fit_after.slope_mib_per_token * MIB_KIB:.3f} KiB/token + "
                     f"{r.fit_after.intercept_mib:.1f} MiB")
    if r.formula_mib_per_token is not None and r.formula_mib_per_token_per_slot is not None:
        diff = "" if r.relative_difference is None else f"; measured - formula = {r.relative_difference:+.2%}"
        lines.append(f"- KV formula (global layers only; sliding-window layers are a constant): "
                     f"{r.formula_mib_per_token * MIB_KIB:.3f} KiB/token = "
                     f"{r.formula_mib_per_token_per_slot * MIB_KIB:.3f} per slot x {r.parallel}{diff}")
    rec = r.recommendation
    lines.append(f"- Recommendation: **num_ctx {rec.num_ctx}** ({rec.note})" if rec.num_ctx
                 else f"- Recommendation: none ({rec.note})")
    lines += ["", "| num_ctx | status | start s | memory at load MiB | RSS at load MiB | prompt tokens | "
              "memory after MiB | RSS after MiB | formula KV MiB | prefill tok/s | decode tok/s | in fit | note |",
              "|" + "---|" * 13]
    for row in r.rows:
        note = (f"CUT: {row.truncation_reason}; " if row.truncated else "") + row.note
        lines.append("| " + " | ".join([
            str(row.num_ctx), row.status, _num(row.load_s, 2), _num(row.load_mib), _num(row.rss_load_mib),
            _num(row.prompt_eval_count), _num(row.vram_mib), _num(row.rss_mib), _num(row.formula_kv_mib),
            _num(row.prefill_tok_s), _num(row.decode_tok_s), "yes" if row.in_fit else "no", note.replace("|", "/"),
        ]) + " |")
    lines += ["", "## Notes", ""] + [f"- {n}" for n in r.notes]
    lines += ["- llama-server reserves the whole KV cache when it starts, so memory at load already shows it; "
              "a prompt only touches a few more MiB of compute buffers. Formula KV is the reservation of "
              "chunkwise.ollama.kv for llama-server (global layers x num_ctx, plus the fixed sliding window)."]
    return "\n".join(lines) + "\n"
