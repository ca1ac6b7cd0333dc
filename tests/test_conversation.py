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
    for i in range(5):
        conv.prepare("u" * 400)
        conv.add("u" * 400, "a" * 400)
    messages = conv.prepare("u" * 400)
    assert messages[0] == {"role": "system", "content": "s" * 40}
    assert conv.estimated_tokens("u" * 400) <= 500
    kept_pairs = (len(messages) - 2) // 2
    assert kept_pairs == 1
    assert conv.trimmed == 4


def test_replay_reproduces_the_same_state():
    def drive(conv):
        out = []
        for i in range(30):
            out.append(conv.prepare(f"question {i} " * 20))
            conv.add(f"question {i} " * 20, f"answer {i} " * 30)
        return out

    a = drive(Conversation("sys", num_ctx=2048, trim_threshold=0.875, chars_per_token=4.0))
    b = drive(Conversation("sys", num_ctx=2048, trim_threshold=0.875, chars_per_token=4.0))
    assert a == b
    assert len(a[-1]) < 2 * 30  # trimming happened


def test_different_row_system_prompt_restarts_the_conversation():
    conv = Conversation("one", num_ctx=10_000, trim_threshold=0.875, chars_per_token=4.0)
    conv.prepare("q1")
    conv.add("q1", "a1")
    messages = conv.prepare("q2", "two")
    assert messages == [{"role": "system", "content": "two"}, {"role": "user", "content": "q2"}]
    assert conv.restarts == 1
