"""Deterministic synthetic request sets for the demo, tests and benchmarks.

What the generated file looks like (`write_sample`):

- columns `id` (string `req-0000001`, ...), `prompt` (string), `category` (string) and `priority`
  (int8) -- the last two are carried through to the results untouched; there is no `system` column;
- prompt lengths follow a log-normal distribution (sigma `LOG_SIGMA`) taken at evenly spaced
  quantiles and shuffled, then scaled so that the mean is exactly `TARGET_MEAN_CHARS` characters for
  any row count. Roughly 1 row in 1,000 is above 5,000 tokens and the longest of 170,000 rows is
  about 13,000 tokens;
- every prompt starts with its id, so prompts are unique; the rest is a slice of one word corpus
  built once per process (no per-word Python work per row, so 170,000 rows take seconds);
- the vocabulary is weighted so that `chunkwise.harness.sim.tokenizer.count_tokens` gives about
  `DEFAULT_CHARS_PER_TOKEN` (4.0) characters per token. The mean prompt is then about 700 tokens
  both by the tokenizer and by the chars/4 estimate, which reproduces the reference design: a
  2,400-token system prompt, num_ctx 128,000 and 200 expected answer tokens give 111 requests per
  chunk and 1,532 chunks for 170,000 rows.

The same `(rows, seed)` gives a byte-identical file (fixed Parquet writer settings, no timestamps).
"""

from __future__ import annotations

import math
import os
import random
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from statistics import NormalDist
from typing import Any

from chunkwise.harness.sim.tokenizer import tokenize
from chunkwise.tokens import DEFAULT_CHARS_PER_TOKEN

#: Mean prompt length in characters: 702 estimated tokens at 4 characters per token, so that mean
#: tokens per request = 702 + 200 expected answer tokens = 902 and floor(0.8 x 125,600 / 902) = 111.
TARGET_MEAN_CHARS = 2808
#: Spread of the log-normal prompt-length distribution (natural log units).
LOG_SIGMA = 0.7
#: Prompt length bounds in characters before the final rescale.
MIN_CHARS, MAX_CHARS = 96, 80_000
#: Rows per Parquet row group of the sample file (and per generation batch).
ROW_GROUP_ROWS = 16_384
CATEGORIES = ("billing", "shipping", "returns", "technical", "account", "other")
CATEGORY_WEIGHTS = (30, 25, 15, 15, 10, 5)
PRIORITY_WEIGHTS = (10, 30, 35, 20, 5)  # priorities 1..5
#: The corpus depends on this constant only, never on the caller's seed.
CORPUS_SEED = 20_240_611
CORPUS_WORDS = 900_000

#: Rough English frequency order: earlier words are drawn more often.
VOCABULARY = """the of and to a in is that for it as with on be by this are from at or an
was can not has have will which their more all one about they we you if our its also
your when been into some than them what each other over such only most must need
data order customer account report review system service request support payment invoice
update delivery product quality issue problem message summary status team process policy
please check confirm reply details thanks question change return refund address contract
schedule meeting project budget release version server network storage security access
document section table record value number amount total price cost balance month year week
text line list item case task note plan rate time date code file form page part
today morning evening client partner vendor supplier manager engineer analyst operator
shipment warehouse inventory package tracking label carrier route region country city
because however therefore although whether several different important available required
described following previous current expected additional specific general recent similar
information management performance development environment configuration application
responsible understanding requirements documentation communication""".split()
#: Frequency weight of a word is `ratio ** RATIO_EXPONENT / (rank + 10) ** 0.7`, where ratio is
#: the word's characters per token (leading space included). The exponent was tuned so the corpus
#: comes out at 4.0 characters per token under chunkwise.harness.sim.tokenizer (3.66 without it).
RATIO_EXPONENT = 3.2

SYSTEM_PROMPT_HEAD = (
    "You are a careful assistant that answers customer service requests. Read each request, "
    "answer it in at most three sentences, and keep facts from the request unchanged. "
    "Background notes follow.\n\n"
)


def _word_ratio(word: str) -> float:
    return (len(word) + 1) / math.ceil(len(word) / 4)


@lru_cache(maxsize=1)
def corpus() -> str:
    """About 7 MB of sentence-like text from `VOCABULARY`, the same on every call and machine."""
    rng = random.Random(CORPUS_SEED)
    weights = [_word_ratio(w) ** RATIO_EXPONENT / (rank + 10) ** 0.7 for rank, w in enumerate(VOCABULARY)]
    words = rng.choices(VOCABULARY, weights=weights, k=CORPUS_WORDS)
    sentences = []
    i = 0
    while i < len(words):  # per sentence, not per word: about 75,000 iterations
        n = rng.randint(6, 18)
        s = words[i : i + n]
        i += n
        if len(s) > 5 and rng.random() < 0.4:
            k = rng.randint(2, len(s) - 2)
            s[k] += ","
        s[0] = s[0].capitalize()
        sentences.append(" ".join(s) + ".")
    return " ".join(sentences)


def prompt_lengths(rows: int, seed: int = 0) -> list[int]:
    """Prompt lengths in characters for `rows` rows; their sum is exactly rows x TARGET_MEAN_CHARS."""
    if rows <= 0:
        return []
    dist = NormalDist()
    # Median chosen so the log-normal's mean is TARGET_MEAN_CHARS; the rescale below makes it exact.
    median = TARGET_MEAN_CHARS / math.exp(LOG_SIGMA**2 / 2)
    raw = [min(MAX_CHARS, max(MIN_CHARS, median * math.exp(LOG_SIGMA * dist.inv_cdf((i + 0.5) / rows))))
           for i in range(rows)]
    random.Random(seed).shuffle(raw)
    target = rows * TARGET_MEAN_CHARS
    scale = target / sum(raw)
    lengths = [max(MIN_CHARS, int(x * scale)) for x in raw]
    residual = target - sum(lengths)
    step = 1 if residual > 0 else -1
    i = 0
    while residual != 0:  # spread the rounding remainder one character per row
        if lengths[i % rows] + step >= MIN_CHARS:
            lengths[i % rows] += step
            residual -= step
        i += 1
    return lengths


def sample_rows(lengths: list[int], seed: int, start: int, stop: int) -> dict[str, list[Any]]:
    """Columns of rows [start, stop) of the sample set whose prompt lengths are `lengths`
    (`prompt_lengths(rows, seed)`) as Python lists."""
    text = corpus()
    rng = random.Random(f"{seed}:{start}")
    ids, prompts, categories, priorities = [], [], [], []
    cats = rng.choices(CATEGORIES, weights=CATEGORY_WEIGHTS, k=stop - start)
    prios = rng.choices(range(1, 6), weights=PRIORITY_WEIGHTS, k=stop - start)
    limit = len(text) - MAX_CHARS * 2
    for j, row in enumerate(range(start, stop)):
        rid = f"req-{row + 1:07d}"
        head = f"Request {rid}, {cats[j]}, priority {prios[j]}. "
        body_len = max(1, lengths[row] - len(head))
        offset = text.find(" ", rng.randrange(0, limit)) + 1
        ids.append(rid)
        prompts.append(head + text[offset : offset + body_len])
        categories.append(cats[j])
        priorities.append(prios[j])
    return {"id": ids, "prompt": prompts, "category": categories, "priority": priorities}


@dataclass(frozen=True)
class SampleStats:
    path: str
    rows: int
    bytes: int
    mean_prompt_chars: float


def write_sample(path: str | os.PathLike[str], rows: int, seed: int = 0) -> SampleStats:
    """Write the sample set `(rows, seed)` to `path` (atomically: temp file, then rename)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if rows < 1:
        raise ValueError(f"rows must be at least 1, got {rows}")
    path = Path(path)
    schema = pa.schema([("id", pa.string()), ("prompt", pa.large_string()), ("category", pa.string()),
                        ("priority", pa.int8())])
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    lengths = prompt_lengths(rows, seed)
    total_chars = 0
    try:
        with pq.ParquetWriter(tmp, schema, compression="zstd", use_dictionary=["category"]) as writer:
            for start in range(0, rows, ROW_GROUP_ROWS):
                cols = sample_rows(lengths, seed, start, min(rows, start + ROW_GROUP_ROWS))
                total_chars += sum(map(len, cols["prompt"]))
                writer.write_table(pa.table(cols, schema=schema), row_group_size=ROW_GROUP_ROWS)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return SampleStats(str(path), rows, path.stat().st_size, total_chars / rows)


def sample_system_prompt(tokens: int = 2400) -> str:
    """A fixed system prompt of exactly `tokens` tokens by chunkwise.harness.sim.tokenizer (about 4 x tokens chars)."""
    if tokens < 1:
        raise ValueError(f"tokens must be at least 1, got {tokens}")
    text = SYSTEM_PROMPT_HEAD + corpus()[: int(tokens * DEFAULT_CHARS_PER_TOKEN * 1.5) + 64]
    return "".join(tokenize(text)[:tokens])
