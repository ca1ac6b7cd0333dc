"""The simulator's own tokenizer, template and token density; greedy decoding at temperature 0.

Sources: Llama 3's chat template (`<|start_header_id|>role<|end_header_id|>\\n\\n content <|eot_id|>`,
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

from chunkwise.harness.sim.tokenizer import count_tokens, render_chat, tokenize

CODE = "def f(x_1, y):\n    return {'k': x_1[0] + y}  # sum\n" * 4
ENGLISH = "The server answers every request in the order it arrives, and keeps the model loaded. " * 4
CJK = "模型在服务器上运行并回答每一个请求。" * 4
IDS = "id=8f3a9c21-77e0-4b1d-9a6e-0c5d2e7f1b34 ts=1732712345 " * 4


def test_every_character_belongs_to_one_token():
    for text in (CODE, ENGLISH, CJK, IDS):
        for density in (1.0, 1.5, 2.7):
            assert "".join(tokenize(text, density)) == text


def test_tokens_follow_the_documented_rule_on_any_text():
    """The rule of the tokenizer's docstring, written as one plain pattern in rule order, against the
    tokenizer's faster patterns (rules reordered, an ASCII-only pattern) on random mixed texts: CJK,
    other scripts, control characters \\x1c-\\x1f (whitespace to Python), NBSP, emoji, underscores."""
    cjk = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff"
    rule = re.compile(rf" ?[{cjk}]{{1,2}}| ?[^\W_{cjk}]{{1,4}}| ?[^\w\s]| ?_|\s+")
    others = "\u00e9\u00fc\u00df\u4e2d\u6587\u65e5\u672c\ud55c\uad6d\uff71\u3000\u00a0\u2028"
    alphabet = [chr(c) for c in range(128)] + list(others + "\u03b1\u03b2\u0661\u0662_ \t\n\U0001F600")
    rng = random.Random(5)
    for _ in range(3000):
        pool = [*rng.sample(alphabet, rng.randint(1, 10)), " ", "a"]
        text = "".join(rng.choice(pool) for _ in range(rng.randint(0, 30)))
        assert tokenize(text) == rule.findall(text), repr(text)
    for text in (CODE, ENGLISH, CJK, IDS):
        assert tokenize(text) == rule.findall(text)


def test_code_ids_and_cjk_are_denser_than_english():
    per_token = {name: len(text) / count_tokens(text) for name, text in
                 (("english", ENGLISH), ("code", CODE), ("cjk", CJK), ("ids", IDS))}
    assert per_token["english"] > 3.0
    assert per_token["code"] < 2.5 and per_token["ids"] < 3.0 and per_token["cjk"] < 2.0


def test_density_multiplies_the_count_deterministically():
    base = count_tokens(ENGLISH)
    dense = count_tokens(ENGLISH, 1.5)
    assert 1.35 * base <= dense <= 1.65 * base  # about 1.5 x: the hash decides which tokens split
    assert tokenize(ENGLISH, 1.5) == tokenize(ENGLISH, 1.5)
    assert count_tokens(ENGLISH, 2.0) > dense


def test_llama3_template_overhead(sim):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    rendered = render_chat(messages)
    assert rendered[:4] == ["<|start_header_id|>", "system", "<|end_header_id|>", "\n\n"]
    assert rendered[-4:] == ["<|start_header_id|>", "assistant", "<|end_header_id|>", "\n\n"]
    body = httpx.post(f"{sim.url}/api/chat", json={"model": "llama3.1:8b", "messages": messages, "stream": False},
                      trust_env=False).json()
    assert body["prompt_eval_count"] == 2 * 5 + count_tokens("Be brief.") + count_tokens("Hi") + 4
    show = httpx.post(f"{sim.url}/api/show", json={"model": "llama3.1:8b"}, trust_env=False).json()
    assert "<|start_header_id|>" in show["template"] and "<|eot_id|>" in show["template"]


def test_token_density_reaches_prompt_and_answer_counts(sim_factory):
    plain, dense = sim_factory(answer_tokens=(40, 40)), sim_factory(answer_tokens=(40, 40), token_density=1.5)
    body = {"model": "llama3.1:8b", "messages": [{"role": "user", "content": CODE}], "stream": False}
    a = httpx.post(f"{plain.url}/api/chat", json=body, trust_env=False).json()
    b = httpx.post(f"{dense.url}/api/chat", json=body, trust_env=False).json()
    assert b["prompt_eval_count"] > 1.1 * a["prompt_eval_count"]  # code: many 1-character tokens cannot split
    assert b["message"]["content"] == a["message"]["content"]  # same text, more tokens
    assert b["eval_count"] == count_tokens(b["message"]["content"], 1.5) > a["eval_count"]


def test_client_does_not_see_the_template_constants():
    """Nothing outside chunkwise/harness/sim/ may import the simulator's template constants (issue 9 item 3)."""
    root = pathlib.Path(__file__).resolve().parents[1] / "chunkwise"
    new_names = {"TEMPLATE_MESSAGE_TOKENS", "TEMPLATE_GENERATION_TOKENS", "GENERATION_TOKENS", "message_template"}
    for path in root.rglob("*.py"):
        if path.is_relative_to(root / "harness" / "sim"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("chunkwise.harness.sim"):
                assert not new_names & {a.name for a in node.names}, path


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
