"""Conversation mode: system prompt once, pairs appended, oldest pairs trimmed past the threshold."""

from chunkwise.run.conversation import Conversation


def test_messages_grow_with_pairs_and_keep_system_first():
    conv = Conversation("be brief", num_ctx=10_000, trim_threshold=0.875, chars_per_token=4.0)
    first = conv.prepare("q1")
    assert first == [{"role": "system", "content": "be brief"}, {"role": "user", "content": "q1"}]
    conv.add("q1", "a1")
    second = conv.prepare("q2")
    assert [m["role"] for m in second] == ["system", "user", "assistant", "user"]
    assert second[2]["content"] == "a1"


def test_oldest_pairs_dropped_when_past_threshold_system_kept():
    # each pair: 2 x (400 chars / 4 + 4 overhead) = 208 tokens; limit 0.5 x 1000 = 500 tokens
    conv = Conversation("s" * 40, num_ctx=1000, trim_threshold=0.5, chars_per_token=4.0)
    for _ in range(5):
        conv.prepare("u" * 400)
        conv.add("u" * 400, "a" * 400)
    messages = conv.prepare("u" * 400)
    assert messages[0] == {"role": "system", "content": "s" * 40}
    assert conv.estimated_tokens("u" * 400) <= 500
    kept_pairs = (len(messages) - 2) // 2
    assert kept_pairs == 1
    assert conv.trimmed == 4


ROWS = [(f"question {i} " * 20, "other system" if i == 17 else None) for i in range(30)]
#: The server's answers; None is a failed request, which the conversation does not keep (chunk.py).
ANSWERS = [None if i in (5, 22) else f"answer {i} " * 30 for i in range(30)]


def new_conversation() -> Conversation:
    return Conversation("sys", num_ctx=2048, trim_threshold=0.875, chars_per_token=4.0)


def drive(conv: Conversation, start: int, end: int, ledger: dict[int, str | None],
          snapshots: list[tuple] | None = None) -> dict[int, list[dict[str, str]]]:
    """chunk.py's conversation loop over rows start..end-1: prepare each row, send it (recorded here)
    unless the ledger already holds its outcome, and keep an answered one as a pair."""
    sent = {}
    for i in range(start, end):
        if snapshots is not None:
            snapshots.append(state(conv))
        prompt, system = ROWS[i]
        messages = conv.prepare(prompt, system)
        if i not in ledger:
            sent[i] = messages
            ledger[i] = ANSWERS[i]
        if ledger[i] is not None:
            conv.add(prompt, ledger[i])
    return sent


def state(conv: Conversation) -> tuple:
    return conv.system, list(conv.pairs), conv.pair_tokens, conv.trimmed, conv.restarts


def test_a_conversation_rebuilt_from_a_ledger_prefix_sends_what_the_uninterrupted_one_sent():
    """A crash after row k: the resumed chunk rebuilds its conversation from the ledger's first k outcomes
    (sending nothing), then sends rows k.. . For every k the rebuilt state is the one the uninterrupted
    run had before row k, and every later message is the one it sent."""
    whole, snapshots = new_conversation(), []
    reference = drive(whole, 0, len(ROWS), {}, snapshots)
    assert whole.trimmed > 0 and whole.restarts == 1  # the rows exercise trimming and a system-prompt switch
    for k in range(len(ROWS)):
        ledger = {i: ANSWERS[i] for i in range(k)}
        rebuilt = new_conversation()
        assert drive(rebuilt, 0, k, ledger) == {}  # the replay sends nothing
        assert state(rebuilt) == snapshots[k], k
        resumed = drive(rebuilt, k, len(ROWS), ledger)
        assert resumed == {i: reference[i] for i in range(k, len(ROWS))}, k


def test_different_row_system_prompt_restarts_the_conversation():
    conv = Conversation("one", num_ctx=10_000, trim_threshold=0.875, chars_per_token=4.0)
    conv.prepare("q1")
    conv.add("q1", "a1")
    messages = conv.prepare("q2", "two")
    assert messages == [{"role": "system", "content": "two"}, {"role": "user", "content": "q2"}]
    assert conv.restarts == 1


def dense_server_count(messages, density=1.5):
    """A server whose tokenizer packs the text `density` times denser than 4 chars/token."""
    return sum(int(len(m["content"]) / 4 * density) + 6 for m in messages) + 5


def test_trimming_follows_the_servers_counts_for_dense_text():
    num_ctx, num_predict = 4096, 256
    conv = Conversation("s" * 400, num_ctx=num_ctx, trim_threshold=0.875, chars_per_token=4.0, num_predict=num_predict)
    worst = 0
    for i in range(60):
        user = f"def f{i}(x): return x[{i}] + 1; " * 12
        messages = conv.prepare(user)
        real = dense_server_count(messages)
        worst = max(worst, real)
        conv.add(user, "a" * 600, prompt_eval_count=real, eval_count=200)
    assert conv.trimmed > 0
    assert worst + num_predict <= num_ctx  # the answer always has room


def test_a_fixed_ratio_alone_would_overflow_the_same_conversation():
    """The witness for the test above: without the server's counts the same turns overflow."""
    num_ctx, num_predict = 4096, 256
    conv = Conversation("s" * 400, num_ctx=num_ctx, trim_threshold=0.875, chars_per_token=4.0, num_predict=num_predict)
    worst = 0
    for i in range(60):
        user = f"def f{i}(x): return x[{i}] + 1; " * 12
        worst = max(worst, dense_server_count(conv.prepare(user)))
        conv.add(user, "a" * 600)
    assert worst + num_predict > num_ctx


def test_harder_trim_after_a_refusal_keeps_a_quarter_of_the_limit_free():
    conv = Conversation("sys", num_ctx=4096, trim_threshold=0.875, chars_per_token=4.0)
    for _ in range(6):
        conv.prepare("q" * 1200)
        conv.add("q" * 1200, "a" * 400)
    # past the harder limit, within the usual one (no trim yet)
    assert int(0.875 * 4096 * 0.75) < conv.estimated_tokens("q" * 1200) <= conv.limit
    before = len(conv.prepare("q" * 1200))
    after = conv.prepare("q" * 1200, harder=True)
    assert len(after) < before and conv.harder_trims == 1
    assert conv.estimated_tokens("q" * 1200) <= int(0.875 * 4096 * 0.75)



def test_a_trim_goes_down_to_a_fraction_of_the_limit_so_the_next_turns_reuse_the_prompt_cache():
    """Issue 19 item 7: the server re-evaluates a prompt from the first token that differs from the slot's last
    one. Dropping one pair per turn changes the prompt right after the system prompt on every full turn; a
    trim down to TRIM_TO_FRACTION of the limit lets the next turns only append. Over 60 turns of dense text, the
    turns whose prompt is not the previous prompt plus its answer (a cache miss past the system prompt) are few,
    and every prompt still fits."""
    num_ctx, num_predict = 4096, 256
    conv = Conversation("s" * 400, num_ctx=num_ctx, trim_threshold=0.875, chars_per_token=4.0, num_predict=num_predict)
    previous: list[dict[str, str]] = []
    misses, worst = 0, 0
    for i in range(60):
        user = f"def f{i}(x): return x[{i}] + 1; " * 12
        messages = conv.prepare(user)
        misses += bool(previous) and messages[: len(previous)] != previous
        real = dense_server_count(messages)
        worst = max(worst, real)
        conv.add(user, "a" * 600, prompt_eval_count=real, eval_count=200)
        previous = [*messages, {"role": "assistant", "content": "a" * 600}]
    assert conv.trimmed > 0 and worst + num_predict <= num_ctx
    assert misses <= 60 // 5, f"{misses} of 60 turns re-evaluated the history"  # one pair per turn: 50 of 60
