"""Token densities by character class, measured with the real Gemma 3 tokenizer through Ollama.

The simulator's tokenizer (chunkwise/harness/sim/tokenizer.py) takes its per-class constants from
this measurement: each text below is sent to /api/chat as the only user message, and Ollama's
`prompt_eval_count` minus the count for an empty message (the chat template's own tokens) is the
text's token count. Run it against `running_ollama()` (or any Ollama serving `gemma3-270m`):

    .venv/bin/python -m tests.support.gemma_density [URL]

It prints, per class, characters, tokens and characters per token.
"""

from __future__ import annotations

import random
import sys

import httpx

MODEL = "gemma3-270m"
_rng = random.Random(7)

PROSE = (
    "The committee reviewed the quarterly results and found that most regional offices met their "
    "targets, although shipping delays in the northern warehouses reduced customer satisfaction. "
    "Several managers suggested that the company should invest in better tracking software, while "
    "others argued that the real problem was the shortage of experienced drivers during the holidays. "
    "After a long discussion, the board agreed to fund a pilot program and to report back in spring."
)
LONG_WORDS = " ".join(["internationalization", "counterproductive", "misunderstanding", "responsibilities",
                       "telecommunications", "characteristically", "incomprehensible", "disproportionate"] * 4)
DIGITS = " ".join(str(_rng.randrange(10**5, 10**6)) for _ in range(40))
DIGIT_RUN = "".join(str(_rng.randrange(10)) for _ in range(200))
PUNCT = " ".join(_rng.choice(["{", "}", "(", ")", ";", "=", "==", "->", "[", "]", ",", ".", ":", "#", "*", "+"])
                 for _ in range(120))
CODE = '''def merge(left, right):
    out = []
    i = j = 0
    while i < len(left) and j < len(right):
        if left[i] <= right[j]:
            out.append(left[i]); i += 1
        else:
            out.append(right[j]); j += 1
    return out + left[i:] + right[j:]

for k, v in sorted(table.items(), key=lambda kv: (-kv[1], kv[0])):
    print(f"{k:>12} {v:8.3f}")
'''
CJK = ("人工智能是计算机科学的一个分支，它企图了解智能的实质，"  # noqa: RUF001 (Chinese punctuation)
       "并生产出一种新的能以人类智能相似的方式做出反应的智能机器。"
       "该领域的研究包括机器人、语言识别、图像识别、自然语言处理和专家系统等。"
       "自从人工智能诞生以来，理论和技术日益成熟，"  # noqa: RUF001
       "应用领域也不断扩大。")
NEWLINES = "\n" * 40
SPACES = "a" + " " * 60 + "b"
INDENT = "\n".join("        x" for _ in range(30))

TEXTS = {
    "empty": "", "prose": PROSE, "long_words": LONG_WORDS, "digits_6": DIGITS, "digit_run": DIGIT_RUN,
    "punct": PUNCT, "code": CODE, "cjk": CJK, "newlines": NEWLINES, "spaces": SPACES, "indent": INDENT,
}


def prompt_tokens(client: httpx.Client, url: str, text: str) -> int:
    body = {"model": MODEL, "messages": [{"role": "user", "content": text}], "stream": False,
            "options": {"num_ctx": 2048, "num_predict": 1, "temperature": 0}}
    response = client.post(f"{url}/api/chat", json=body)
    response.raise_for_status()
    return int(response.json()["prompt_eval_count"])


def main(url: str) -> None:
    with httpx.Client(timeout=600, trust_env=False) as client:
        base = prompt_tokens(client, url, "")
        print(f"template tokens (empty user message): {base}")
        for name, text in TEXTS.items():
            if not text:
                continue
            tokens = prompt_tokens(client, url, text) - base
            ratio = len(text) / tokens
            print(f"{name:12} chars {len(text):5}  tokens {tokens:5}  chars/token {ratio:6.2f}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:11434")
