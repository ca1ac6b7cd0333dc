"""Pure parts of chunkwise measure: the fit, the truncation check, the recommendation, the prompts."""

from __future__ import annotations

from datetime import UTC

import pytest

from chunkwise.harness.sim.tokenizer import chat_prompt_tokens, count_tokens
from chunkwise.measure.compare import explain_difference
from chunkwise.measure.fit import Fit, fit_line, margin_mib, recommend_num_ctx, truncation_check
from chunkwise.measure.prompt import build_prompt, filler
from chunkwise.measure.run import is_local_host, measure_run_dir


def test_fit_recovers_an_exact_line():
    xs = [1000, 2000, 4000, 8000]
    fit = fit_line(xs, [4692.8 + 0.125 * x for x in xs])
    assert fit.slope_mib_per_token == pytest.approx(0.125, rel=1e-12)
    assert fit.intercept_mib == pytest.approx(4692.8, rel=1e-12)
    assert fit.r2 == pytest.approx(1.0) and fit.points == 4
    assert fit.predict(16000) == pytest.approx(4692.8 + 2000)


def test_fit_least_squares_with_noise():
    fit = fit_line([0, 1, 2, 3], [1.0, 3.0, 2.0, 4.0])
    assert fit.slope_mib_per_token == pytest.approx(0.8)
    assert fit.intercept_mib == pytest.approx(1.3)
    assert fit.r2 == pytest.approx(0.64)


def test_flat_line_is_slope_zero_r2_none():
    """The seed measurement's shape: memory flat across prompt lengths."""
    fit = fit_line([1000, 5000, 10000], [10598.0, 10598.0, 10598.0])
    assert fit.slope_mib_per_token == 0 and fit.r2 is None


def test_fit_needs_two_distinct_contexts():
    assert fit_line([], []) is None
    assert fit_line([4000, 4000], [1.0, 2.0]) is None
    with pytest.raises(ValueError, match="as many"):
        fit_line([1, 2], [1.0])


@pytest.mark.parametrize(
    ("expected", "observed", "num_ctx", "server_ctx", "flagged"),
    [
        (918, 918, 1000, 1000, None),
        (918, 910, 1000, None, None),  # within 2 %
        (918, 890, 1000, None, "below"),  # 3 % short
        (7568, 2048, 8000, 2048, "fills the server's context_length 2048"),  # server ignored num_ctx
        (7568, 2048, 8000, None, "below"),  # same, /api/ps without context_length (Ollama < 0.10)
        (9000, 8000, 8000, 8000, "fills num_ctx 8000"),  # Ollama 0.4-0.29: cut to exactly num_ctx
        (9000, 7999, 8000, None, "fills num_ctx 8000"),  # 0.30-0.30.10: num_ctx - 1
        (30000, 16387, 32768, 32768, "below"),  # >= 0.30.11: about half
        (500, 8000, 8000, None, "more than"),
        (7999, 7999, 8000, None, None),  # num_ctx - 1 tokens is a legal prompt
    ],
)
def test_truncation_check(expected, observed, num_ctx, server_ctx, flagged):
    reason = truncation_check(expected, observed, num_ctx, 0.02, server_ctx)
    if flagged is None:
        assert reason is None
    else:
        assert flagged in reason


def test_truncation_check_without_count_and_wide_tolerance():
    assert "cannot check" in truncation_check(100, None, 1000, 0.02)
    assert truncation_check(1000, 700, 2000, 0.35) is None  # an estimate may be 30 % off
    assert truncation_check(1000, 600, 2000, 0.35) is not None


def test_recommendation_memory_bound():
    fit = Fit(0.125, 5000.0, 1.0, 4)
    rec = recommend_num_ctx(fit, 24576.0, "NVML", parallel=1, context_length=131072, max_measured=100000)
    assert rec.margin_mib == pytest.approx(2457.6)
    # (24576 - 2457.6 - 5000) / 0.125 = 136947.2 -> capped by the model's 131072
    assert rec.num_ctx == 131072 and rec.limited_by == "model context_length"
    rec = recommend_num_ctx(fit, 16384.0, "NVML", context_length=131072, max_measured=100000)
    # (16384 - 1638.4 - 5000) / 0.125 = 77964.8 -> 77824 (a multiple of 1024)
    assert rec.num_ctx == 77824 and rec.limited_by == "memory" and not rec.extrapolated
    assert fit.predict(rec.num_ctx) <= 16384 - rec.margin_mib
    assert "margin" in rec.note and rec.margin_rule.startswith("max(1024 MiB, 10%")


def test_recommendation_flags_extrapolation_and_small_capacity():
    fit = Fit(0.25, 4692.8, 1.0, 4)
    rec = recommend_num_ctx(fit, 8000.0, "spill", parallel=2, context_length=131072, max_measured=4000)
    assert rec.num_ctx == 8192 and rec.extrapolated and "extrapolated" in rec.note
    assert margin_mib(8000.0) == 1024.0
    rec = recommend_num_ctx(fit, 5500.0, "x", parallel=2)
    assert rec.num_ctx is None and rec.limited_by == "memory" and "no safe num_ctx" in rec.note


def test_ollamas_compute_buffer_steps_are_taken_out_of_the_fit_and_back_into_the_recommendation():
    from chunkwise.ollama import compute

    term = compute.term_for("0.33.0", parallel=1)
    xs = [1000, 4000, 8000, 20000, 40000, 60000]
    ys = [5000 + 0.125 * x + term(x) for x in xs]  # weights + KV + Ollama's stepped compute buffers
    biased, fit = fit_line(xs, ys), fit_line(xs, ys, term)
    assert abs(biased.slope_mib_per_token - 0.125) > 0.01
    assert fit.slope_mib_per_token == pytest.approx(0.125) and fit.intercept_mib == pytest.approx(5000)
    # 24,000 MiB - 2,400 margin - 5,000 = 16,600: 2 GiB of buffers above 32,768 leave 116,416 tokens
    rec = recommend_num_ctx(fit, 24000.0, "NVML", compute_mib=term)
    assert rec.num_ctx == 113 * 1024 and 5000 + 0.125 * rec.num_ctx + 2048 <= 24000 - 2400
    # 12,000 - 1,200 - 5,000 = 5,800: past 32,768 the 2 GiB step does not fit, 32,768 with 768 MiB does
    rec = recommend_num_ctx(fit, 12000.0, "NVML", compute_mib=term)
    assert rec.num_ctx == 32768 and compute.applies("0.0.0") and not compute.applies("0.13.0")


def test_recommendation_refuses_without_fit_capacity_or_slope():
    assert recommend_num_ctx(None, 1000.0, "x").num_ctx is None
    rec = recommend_num_ctx(Fit(0.1, 1.0, 1.0, 2), None, "NVML unavailable and no --vram-mib given")
    assert rec.num_ctx is None and "unknown memory capacity" in rec.note
    rec = recommend_num_ctx(Fit(0.0, 10598.0, None, 8), 81559.0, "NVML")
    assert rec.num_ctx is None and "did not grow" in rec.note


def test_exact_prompt_hits_the_target():
    for target in (40, 918, 7568, 95000):
        prompt = build_prompt(target + 100, target, exact=True)
        assert prompt.expected_tokens == target == chat_prompt_tokens(prompt.messages)
        assert prompt.tolerance == 0.02 and prompt.method.startswith("exact")


def test_estimated_prompt_is_sized_by_characters():
    prompt = build_prompt(10000, 9000, exact=False, chars_per_token=4.0)
    assert abs(prompt.chars - 36000) < 40
    assert prompt.expected_tokens == round(prompt.chars / 4.0) and prompt.tolerance == 0.35
    calibrated = build_prompt(10000, 9000, exact=False, chars_per_token=4.2, calibrated=True)
    assert calibrated.tolerance == 0.15 and "4.20 chars/token, calibrated" in calibrated.method


def test_filler_is_one_token_per_unit_and_differs_by_seed():
    assert count_tokens(filler(1300, 7)) == 1300
    assert filler(50, 1000) != filler(50, 2000)


def test_explain_difference_names_slots_or_cache_type():
    assert "2 slot(s) of a f16 cache" in explain_difference(0.25, 0.125, 1, "f16")
    assert "1 slot(s) of a q8_0 cache" in explain_difference(0.06640625, 0.125, 1, "f16")
    assert explain_difference(0.2, 0.125, 1, "f16") is None


def test_local_host_and_run_dir(tmp_path):
    assert is_local_host("http://127.0.0.1:11434") and is_local_host("http://localhost:1")
    assert not is_local_host("http://gpu-box.example:11434")
    from datetime import datetime

    d = measure_run_dir(tmp_path, "hf.co/x/y:Q4 K", datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC))
    assert d == tmp_path / "measure-hf.co_x_y_Q4_K-20260102T030405Z"
