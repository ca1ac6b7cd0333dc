"""Token estimates, calibration from the run's own answers, and the truncation rule."""

from chunkwise.tokens import MIN_SAMPLES, TokenEstimator, min_plausible_tokens


def test_uncalibrated_uses_default_ratio_and_wide_tolerance():
    est = TokenEstimator()
    assert est.expected_tokens(4000) == 1000
    assert not est.calibration.calibrated and est.calibration.tolerance == 0.35


def test_calibrates_on_median_of_uncut_answers():
    est = TokenEstimator()
    for i in range(MIN_SAMPLES):
        est.observe(3000 + i, 1000, num_ctx=8192)  # ~3 chars per token
    cal = est.calibration
    assert cal.calibrated and cal.samples == MIN_SAMPLES
    assert abs(cal.chars_per_token - 3.01) < 0.01
    assert est.expected_tokens(3000) == 997


def test_counts_near_half_the_context_are_not_learned():
    est = TokenEstimator()
    for _ in range(MIN_SAMPLES):
        est.observe(100_000, 4096, num_ctx=8192)  # may have been cut
    assert not est.calibration.calibrated


def test_keep_tail_truncation_is_flagged_by_hitting_num_ctx():
    est = TokenEstimator()
    assert est.is_truncated(chars=20_000, prompt_eval_count=4096, num_ctx=4096)


def test_a_prompt_of_num_ctx_minus_one_tokens_is_legal():
    est = TokenEstimator()
    assert not est.is_truncated(chars=4095 * 4, prompt_eval_count=4095, num_ctx=4096)


def test_half_truncation_is_flagged_by_shortfall():
    est = TokenEstimator()
    # ~5,000 tokens sent, Ollama >= 0.30.11 kept num_ctx/2 + 2
    assert est.is_truncated(chars=20_000, prompt_eval_count=2050, num_ctx=4096)


def test_honest_counts_are_not_flagged():
    est = TokenEstimator()
    assert not est.is_truncated(chars=4000, prompt_eval_count=1000, num_ctx=4096)
    assert not est.is_truncated(chars=4000, prompt_eval_count=800, num_ctx=4096)  # within tolerance
    assert not est.is_truncated(chars=4000, prompt_eval_count=None, num_ctx=4096)


def test_min_plausible_tokens_bounds_a_huge_prompt():
    assert min_plausible_tokens(10 * 1024 * 1024) > 1_000_000


def test_a_server_that_refuses_over_long_prompts_is_never_suspected_of_a_cut_by_the_ratio():
    """Issue 19 item 2: calibrated on code-like rows (2.6 chars/token), an English row at 4.4 chars/token
    looks like a cut by the ratio; only a server that can cut (Ollama before 0.12.6) may be suspected."""
    est = TokenEstimator()
    for i in range(MIN_SAMPLES):
        est.observe(2600 + i, 1000, num_ctx=8192)
    assert est.calibration.calibrated and est.calibration.tolerance == 0.15
    assert est.is_truncated(chars=5072, prompt_eval_count=1153, num_ctx=8192)  # expected ~1950: the old rule
    assert not est.is_truncated(chars=5072, prompt_eval_count=1153, num_ctx=8192, server_cuts=False)
    # the whole context filled is a cut (or a prompt with no room to answer) on any server
    assert est.is_truncated(chars=5072, prompt_eval_count=8192, num_ctx=8192, server_cuts=False)
