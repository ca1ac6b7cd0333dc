"""Files of `chunkwise measure`: measure.csv, measure.md, measure.png and measure.json.

The plot uses matplotlib's object API with the Agg canvas (no pyplot, no display, no global
backend switch), so it works in threads, in Prefect workers and on headless servers.
"""

from __future__ import annotations

import csv
import json
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

from chunkwise.measure.report import SOURCE_PS_SIZE, MeasureReport, MeasureRow

REMOTE_SENTENCE = (
    "The GPU sampler measures the machine it runs on; a remote Ollama host needs `chunkwise measure` run there."
)


def _num(value: Any, digits: int = 1) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def write_csv(rows: list[MeasureRow], path: Path) -> None:
    names = [f.name for f in fields(MeasureRow)]
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=names)
        writer.writeheader()
        for row in rows:
            data = asdict(row)
            for key, value in data.items():
                if isinstance(value, float):
                    data[key] = f"{value:.3f}" if key.endswith("_mib") else f"{value:g}"
            writer.writerow(data)


def _gpu_line(gpu: dict[str, Any]) -> str:
    if not gpu.get("available"):
        return f"GPU sampler: {gpu.get('status') or 'unavailable: ' + str(gpu.get('reason'))}"
    parts = [
        f"GPU {g['index']} {g['name']}: {g['total_mib']:.0f} MiB total, baseline {g['baseline_used_mib']:.0f}, "
        f"peak {g['peak_used_mib']:.0f}, mean {g['mean_used_mib']:.0f} MiB used"
        for g in gpu.get("gpus", [])
    ]
    head = f"GPU sampler ({gpu['status']}, every {gpu['interval_s']:g} s, {gpu['samples']} readings): "
    return head + "; ".join(parts)


def render_markdown(report: MeasureReport) -> str:
    r = report
    if r.memory_at_load:
        from chunkwise.measure.engine_output import render_engine_markdown  # it uses this module's helpers

        return render_engine_markdown(r)
    sim = " (chunkwise simulator)" if r.is_simulator else ""
    lines = [f"# chunkwise measure: {r.model}", ""]
    lines.append(f"- Server: {r.host}, Ollama {r.server_version or '?'}{sim}")
    lines.append(f"- VRAM source: **{r.vram_source_text}**")
    lines.append(f"- {_gpu_line(r.gpu)}")
    lines.append(f"- Parallel slots {r.parallel}, KV cache type {r.kv_cache_type} (the server's OLLAMA_NUM_PARALLEL "
                 "and OLLAMA_KV_CACHE_TYPE as given; they only enter the formula)")
    if r.fit:
        r2 = "n/a (flat)" if r.fit.r2 is None else f"{r.fit.r2:.5f}"
        lines.append(f"- Measured: **{r.fit.slope_mib_per_token:.6f} MiB per context token** (all slots), intercept "
                     f"{r.fit.intercept_mib:.1f} MiB, r^2 {r2}, {r.fit.points} points")
    else:
        lines.append("- Measured: no fit (fewer than two usable contexts)")
    layout = "Ollama's Go runners" if r.kv_engine == "ollama" else r.kv_engine
    if r.formula_mib_per_token is not None:
        diff = "" if r.relative_difference is None else f"; measured - formula = {r.relative_difference:+.2%}"
        lines.append(f"- KV formula ({layout} layout): {r.formula_mib_per_token:.6f} MiB/token = "
                     f"{r.formula_mib_per_token_per_slot:.6f} per slot x {r.parallel}{diff}")
    if r.predicted_mib_per_token is not None:
        diff = ("" if r.predicted_relative_difference is None
                else f"; measured - predicted = {r.predicted_relative_difference:+.2%}")
        lines.append(f"- Predicted: **{r.predicted_mib_per_token:.6f} MiB/token** = KV {r.formula_mib_per_token:.6f} + "
                     f"attention mask {r.mask_mib_per_token or 0:.6f} (f16, num_batch {r.batch}, in the compute graph; "
                     f"assumes flash attention){diff}")
    ps_label = "/api/ps size" if r.vram_source == SOURCE_PS_SIZE else "/api/ps size_vram"
    for label, fit in ((ps_label, r.fit_ps), ("NVML used", r.fit_nvml), ("runner RSS", r.fit_rss)):
        if fit is not None:
            lines.append(f"- Fit of {label}: {fit.slope_mib_per_token:.6f} MiB/token + {fit.intercept_mib:.1f} MiB")
    rec = r.recommendation
    if rec.num_ctx:
        lines.append(f"- Recommendation: **num_ctx {rec.num_ctx}** ({rec.note}; margin rule {rec.margin_rule})")
    else:
        lines.append(f"- Recommendation: none ({rec.note})")
    truncated = [row for row in r.rows if row.truncated]
    lines.append(f"- Truncation check: {len(truncated)} of {sum(row.status != 'skipped' for row in r.rows)} "
                 "prompts cut" + ("" if not truncated else " (see the table: their prefill rates are not valid)"))
    lines += ["", "| num_ctx | status | prompt tokens sent | prompt_eval_count | truncated | load s | prefill tok/s "
              "| decode tok/s | ps size MiB | ps size_vram MiB | ps context | NVML used MiB | runner RSS MiB "
              "| formula KV MiB | num_batch | in fit | note |",
              "|" + "---|" * 17]
    for row in r.rows:
        cut = f"YES: {row.truncation_reason}" if row.truncated else ("no" if row.status == "ok" else "")
        lines.append("| " + " | ".join([
            str(row.num_ctx), row.status, _num(row.prompt_tokens_expected), _num(row.prompt_eval_count), cut,
            _num(row.load_s, 3), _num(row.prefill_tok_s), _num(row.decode_tok_s), _num(row.ps_size_mib),
            _num(row.ps_size_vram_mib), _num(row.ps_context_length), _num(row.nvml_used_mib), _num(row.rss_mib),
            _num(row.formula_kv_mib), _num(row.batch), "yes" if row.in_fit else "no", row.note.replace("|", "/"),
        ]) + " |")
    methods = sorted({row.token_count_method for row in r.rows if row.token_count_method})
    lines += ["", f"Prompt tokens sent were counted by: {'; '.join(methods) or 'n/a'}."]
    if r.warnings:
        lines += ["", "## Warnings", ""] + [f"- {w}" for w in r.warnings]
    lines += ["", "## Notes", ""] + [f"- {n}" for n in r.notes]
    lines += [
        f"- {REMOTE_SENTENCE}",
        "- Ollama reserves the KV cache for num_ctx x parallel tokens when it loads a model, whatever the prompt "
        "length; each context here is a reload, which is why memory grows along a line. A flat line at one "
        "num_ctx (the 2025 seed measurement) only shows pre-allocation.",
    ]
    return "\n".join(lines) + "\n"


def write_png(report: MeasureReport, path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    def value(row: MeasureRow) -> float | None:
        """The plotted memory: at load for the engine (its reservation), after the answer for Ollama."""
        return row.load_mib if report.memory_at_load else row.vram_mib

    measured = [row for row in report.rows if value(row) is not None]
    used = [row for row in measured if row.in_fit]
    other = [row for row in measured if not row.in_fit]
    if used:
        ax.plot([r.num_ctx for r in used], [value(r) or 0.0 for r in used], "o", color="tab:blue", label="measured")
    if other:
        ax.plot([r.num_ctx for r in other], [value(r) or 0.0 for r in other], "x", color="tab:red",
                label="measured, left out (spilled or clamped)")
    xs = [row.num_ctx for row in report.rows if row.status != "skipped"] or [0, 1]
    lo, hi = 0, max(xs) * 1.05
    rec = report.recommendation
    if rec.num_ctx:
        hi = max(hi, rec.num_ctx * 1.05)
    if report.fit is not None:
        f = report.fit
        ax.plot([lo, hi], [f.predict(lo), f.predict(hi)], "--", color="tab:blue",
                label=f"fit: {f.slope_mib_per_token:.5f} MiB/token")
        if report.formula_mib_per_token is not None:
            k = report.formula_mib_per_token
            ax.plot([lo, hi], [f.intercept_mib, f.intercept_mib + k * hi], ":", color="tab:green", linewidth=2.5,
                    label=f"KV formula x {report.parallel}: {k:.5f} MiB/token")
    if rec.capacity_mib:
        ax.axhline(rec.capacity_mib, color="black", linewidth=1, label=f"capacity {rec.capacity_mib:.0f} MiB")
        if rec.margin_mib is not None:  # None without a fit: there is no recommendation to draw
            ax.axhline(rec.capacity_mib - rec.margin_mib, color="gray", linewidth=1, linestyle="--",
                       label=f"capacity - margin ({rec.margin_mib:.0f} MiB)")
    if rec.num_ctx:
        ax.axvline(rec.num_ctx, color="tab:orange", linewidth=1, label=f"recommended num_ctx {rec.num_ctx}")
    if not measured:
        ax.text(0.5, 0.5, "no memory reading", transform=ax.transAxes, ha="center")
    ax.set_xlabel("num_ctx (tokens per slot)")
    ax.set_ylabel("memory (MiB)")
    source = {"nvml": "NVML used", "rss": "llama-server RSS at load", SOURCE_PS_SIZE: "/api/ps size"}.get(
        report.vram_source, "/api/ps size_vram")
    ax.set_title(f"{report.model}: memory against num_ctx (source: {source})")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    fig.savefig(path, format="png")


def write_outputs(report: MeasureReport, out_dir: Path) -> None:
    """Write the four files and record their paths and the markdown on the report."""
    report.csv_path = out_dir / "measure.csv"
    report.md_path = out_dir / "measure.md"
    report.png_path = out_dir / "measure.png"
    report.json_path = out_dir / "measure.json"
    write_csv(report.rows, report.csv_path)
    try:
        write_png(report, report.png_path)
    except ImportError as exc:  # a bare GPU machine without matplotlib: the table and CSV still stand
        report.png_path = None
        report.notes.append(f"no PNG: {exc}")
    report.markdown = render_markdown(report)
    report.md_path.write_text(report.markdown, encoding="utf-8")
    report.json_path.write_text(json.dumps(report.as_dict(), indent=2, default=str) + "\n", encoding="utf-8")
