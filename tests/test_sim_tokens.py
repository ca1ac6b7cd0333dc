"""The simulator's own tokenizer, templates and token density; greedy decoding at temperature 0.

Sources: the Gemma 3 tokenizer measured through a real Ollama 0.24.0 (tests/support/gemma_density.py,
the table in sim/tokenizer.py); Llama 3's chat template
(`<|start_header_id|>role<|end_header_id|>\\n\\n content <|eot_id|>`,
the TEMPLATE Ollama's llama3.1 library model ships; research ollama-fidelity-audit.md #35: "llama3.1
spends 5 template tokens per message plus BOS"); ollama/ollama#586: at temperature 0 seeds 5 and 6
give the same text (greedy decoding); `v0.33.0-rc2:llm/llama_server.go:1584-1596`: a `format`
becomes a grammar (json_schema), so a constrained greedy answer repeats itself.
"""

from __future__ import annotations

import ast
import pathlib
import random
import re

import httpx
import pytest

from chunkwise.harness.sim.templates import render_chat
from chunkwise.harness.sim.tokenizer import count_tokens, tokenize
from tests.support.gemma_density import TEXTS

CODE = "def f(x_1, y):\n    return {'k': x_1[0] + y}  # sum\n" * 4
ENGLISH = "The server answers every request in the order it arrives, and keeps the model loaded. " * 4
CJK = "模型在服务器上运行并回答每一个请求。" * 4
IDS = "id=8f3a9c21-77e0-4b1d-9a6e-0c5d2e7f1b34 ts=1732712345 " * 4


def test_every_character_belongs_to_one_token():
    for text in (CODE, ENGLISH, CJK, IDS):
        for density in (1.0, 1.5, 2.7):
            assert "".join(tokenize(text, density)) == text


def test_tokens_follow_the_documented_rule_on_any_text():
    """The rule of the tokenizer's docstring, written out in rule order, against the tokenizer's own
    patterns (an ASCII-only one among them) on random mixed texts: CJK, other scripts and digits,
    control characters \\x1c-\\x1f (whitespace to Python), NBSP, emoji, underscores, newlines."""
    cjk = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff"
    rule = re.compile(rf" ?[{cjk}]{{1,2}}| ?[^\W\d_{cjk}]{{1,10}}|\d| ?[^\w\s]{{1,3}}| ?_{{1,3}}|\n|[^\S\n]{{1,2}}")
    others = "\u00e9\u00fc\u00df\u4e2d\u6587\u65e5\u672c\ud55c\uad6d\uff71\u3000\u00a0\u2028"
    alphabet = [chr(c) for c in range(128)] + list(others + "\u03b1\u03b2\u0661\u0662_ \t\n\U0001F600")
    rng = random.Random(5)
    for _ in range(3000):
        pool = [*rng.sample(alphabet, rng.randint(1, 10)), " ", "a"]
        text = "".join(rng.choice(pool) for _ in range(rng.randint(0, 30)))
        assert tokenize(text) == rule.findall(text), repr(text)
    for text in (CODE, ENGLISH, CJK, IDS):
        assert tokenize(text) == rule.findall(text)


#: prompt_eval_count of each text of tests/support/gemma_density.py as a user message, minus the 9 tokens of
#: an empty one: the Gemma 3 tokenizer through a real Ollama 0.24.0 serving gemma3-270m (2026-12-06).
GEMMA_COUNTS = {"prose": 77, "long_words": 64, "digits_6": 279, "digit_run": 200, "punct": 120, "code": 162,
                "cjk": 69, "newlines": 40, "spaces": 32, "indent": 179}


@pytest.mark.parametrize("name", sorted(GEMMA_COUNTS))
def test_counts_by_character_class_follow_the_real_gemma_tokenizer(name):
    """Each class within 5 % (and 2 tokens) of what the real tokenizer spent on the same text."""
    assert abs(count_tokens(TEXTS[name]) - GEMMA_COUNTS[name]) <= max(2, 0.05 * GEMMA_COUNTS[name])


def test_code_ids_and_cjk_are_denser_than_english():
    per_token = {name: len(text) / count_tokens(text) for name, text in
                 (("english", ENGLISH), ("code", CODE), ("cjk", CJK), ("ids", IDS))}
    assert per_token["english"] > 4.5  # a 262K vocabulary: most English words are one token
    assert per_token["code"] < 2.5 and per_token["ids"] < 2.0 and per_token["cjk"] < 2.0


def test_density_multiplies_the_count_deterministically():
    base = count_tokens(ENGLISH)
    dense = count_tokens(ENGLISH, 1.5)
    assert 1.3 * base <= dense <= 1.65 * base  # about 1.5 x: the hash decides which tokens split; "," cannot
    assert tokenize(ENGLISH, 1.5) == tokenize(ENGLISH, 1.5)
    assert count_tokens(ENGLISH, 2.0) > dense


def test_template_overhead_per_family(sim):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    rendered = render_chat(messages)
    assert rendered[:5] == ["<|begin_of_text|>", "<|start_header_id|>", "system", "<|end_header_id|>", "\n\n"]
    assert rendered[-4:] == ["<|start_header_id|>", "assistant", "<|end_header_id|>", "\n\n"]
    body = httpx.post(f"{sim.url}/api/chat", json={"model": "llama3.1:8b", "messages": messages, "stream": False},
                      trust_env=False).json()
    assert body["prompt_eval_count"] == 1 + 2 * 5 + count_tokens("Be brief.") + count_tokens("Hi") + 4
    show = httpx.post(f"{sim.url}/api/show", json={"model": "llama3.1:8b"}, trust_env=False).json()
    assert "<|start_header_id|>" in show["template"] and "<|eot_id|>" in show["template"]
    # gemma3-270m: an empty user message costs 9 tokens, as on the real Ollama 0.24.0
    empty = {"model": "gemma3-270m", "messages": [{"role": "user", "content": ""}], "stream": False,
             "options": {"num_predict": 1}}
    assert httpx.post(f"{sim.url}/api/chat", json=empty, trust_env=False).json()["prompt_eval_count"] == 9


def test_token_density_reaches_prompt_and_answer_counts(sim_factory):
    plain, dense = sim_factory(answer_tokens=(40, 40)), sim_factory(answer_tokens=(40, 40), token_density=1.5)
    body = {"model": "llama3.1:8b", "messages": [{"role": "user", "content": CODE}], "stream": False}
    a = httpx.post(f"{plain.url}/api/chat", json=body, trust_env=False).json()
    b = httpx.post(f"{dense.url}/api/chat", json=body, trust_env=False).json()
    assert b["prompt_eval_count"] > 1.1 * a["prompt_eval_count"]  # code: many 1-character tokens cannot split
    assert b["message"]["content"] == a["message"]["content"]  # same text, more tokens
    assert b["eval_count"] == count_tokens(b["message"]["content"], 1.5) > a["eval_count"]


def test_client_does_not_see_the_tokenizer_or_templates():
    """Nothing outside chunkwise/harness/sim/ may import the simulator's templates, its memory model or its
    tokenizer's constants (issue 9 item 3, issue 18 item 5)."""
    root = pathlib.Path(__file__).resolve().parents[1] / "chunkwise"
    constants = {"TOKEN_RE", "ASCII_TOKEN_RE", "LETTERS_PER_TOKEN", "SYMBOLS_PER_TOKEN", "CJK_PER_TOKEN",
                 "BLANKS_PER_TOKEN"}
    for path in root.rglob("*.py"):
        if path.is_relative_to(root / "harness" / "sim"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("chunkwise.harness.sim"):
                assert node.module not in ("chunkwise.harness.sim.templates", "chunkwise.harness.sim.memory"), path
                assert not constants & {a.name for a in node.names}, path


def _answer(url: str, seed: int, temperature: float, fmt=None) -> str:
    body = {"model": "llama3.1:8b", "messages": [{"role": "user", "content": "Pick one."}], "stream": False,
            "options": {"seed": seed, "temperature": temperature}}
    if fmt is not None:
        body["format"] = fmt
    return httpx.post(f"{url}/api/chat", json=body, trust_env=False).json()["message"]["content"]


def test_temperature_zero_ignores_the_seed_and_a_grammar_answer_repeats(sim):
    assert len({_answer(sim.url, seed, 0) for seed in (1, 2, 3, 4)}) == 1
    schema = {"type": "object", "properties": {"n": {"type": "integer", "enum": [1, "two", 3, 4, 5]}},
              "required": ["n"]}
    assert len({_answer(sim.url, seed, 0, schema) for seed in range(6)}) == 1
    assert len({_answer(sim.url, seed, 0.8) for seed in (1, 2, 3, 4)}) > 1  # sampling does depend on it
