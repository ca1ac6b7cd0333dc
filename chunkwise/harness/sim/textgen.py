"""Deterministic model output: plausible English prose, or JSON for `format`.

Everything derives from a 256-bit key (see `output_key`): the same model, messages/prompt,
options.seed, options.temperature and format always give the same answer, on any machine.

Prose is a window of a fixed corpus (`CORPUS`, about 64K tokens of sentences drawn once from
`WORDS` with a fixed seed) that starts at a sentence chosen by the key. Its natural length is
MIN..MAX tokens (`SimOptions.answer_tokens`, default 16..256), also chosen by the key. Windows are
re-tokenized exactly by `chunkwise.harness.sim.tokenizer.tokenize`, so eval_count == count_tokens(answer).

`format: "json"` gives an object with 2-4 keys; a JSON-schema `format` gives a value valid for the
schema (`schema_value`). JSON output has the length its value needs.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from typing import Any

from chunkwise.harness.sim.tokenizer import tokenize

WORDS = (
    "the a an of to in on for with by from as at and or but not this that these those it its they "
    "their we our you your model data result results value values time request requests answer "
    "question system server batch chunk token tokens context memory cache queue slot run runs test "
    "report table figure point list item items order field record records text document page line "
    "number count rate level state step stage phase group part case example method process result "
    "shows means gives takes keeps makes uses needs finds holds reads writes sends returns starts "
    "ends moves grows drops stays fits covers follows matches changes explains describes suggests "
    "remains appears includes requires provides supports reduces improves measures compares "
    "clear large small short long early late simple common final first last next other same main "
    "high low full empty stable recent useful careful quick steady exact rough total average "
    "usually often rarely still also only then again already almost nearly about because while "
    "after before since until when where which however therefore instead overall meanwhile "
    "2 3 4 5 8 10 12 16 20 24 32 42 64 100 128 256 512 1024 2048 4096"
).split()
_CAPITALIZED = ("The", "This", "Each", "Most", "Our", "Every", "Some", "Then", "However", "Overall")


def _build_corpus(sentences: int = 5000, seed: int = 20241126) -> tuple[list[str], list[int]]:
    """Token list of the corpus and the token index where each sentence starts."""
    rng = random.Random(seed)
    tokens: list[str] = []
    starts: list[int] = []
    for _ in range(sentences):
        words = [rng.choice(_CAPITALIZED)] + [rng.choice(WORDS) for _ in range(rng.randint(5, 18))]
        text = ""
        for i, word in enumerate(words):
            text += " " + word
            if 0 < i < len(words) - 2 and rng.random() < 0.08:
                text += ","
        starts.append(len(tokens))
        tokens += tokenize(text + ".")
    return tokens, starts


CORPUS, SENTENCE_STARTS = _build_corpus()


def output_key(fingerprint: str, seed: Any, temperature: Any, fmt: Any) -> bytes:
    """The 32-byte key every generated detail derives from.

    At temperature 0 decoding is greedy: the seed changes nothing (ollama/ollama#586: seeds 5 and 6
    give the same text at temperature 0), so it is left out of the key; a grammar-constrained
    (`format`) answer then repeats itself on every retry."""
    if temperature == 0:
        seed = "greedy"
    fmt_text = json.dumps(fmt, sort_keys=True, separators=(",", ":")) if fmt is not None else ""
    return hashlib.sha256(f"{fingerprint}|{seed}|{temperature}|{fmt_text}".encode()).digest()


def prose_tokens(key: bytes, count: int) -> list[str]:
    """`count` tokens of prose starting at the sentence the key picks (the corpus repeats if needed)."""
    start = SENTENCE_STARTS[int.from_bytes(key[:8], "big") % len(SENTENCE_STARTS)]
    out = CORPUS[start : start + count]
    while len(out) < count:
        out += CORPUS[: count - len(out)]
    if out:
        out[0] = out[0].lstrip(" ")
    return out


def natural_length(key: bytes, lo: int, hi: int) -> int:
    """Answer length in tokens, uniform in lo..hi by the key."""
    return lo + int.from_bytes(key[8:16], "big") % (hi - lo + 1)


def _words(rng: random.Random, lo: int, hi: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi)))


def schema_value(schema: Any, rng: random.Random, root: Any = None, depth: int = 0) -> Any:
    """A JSON value valid for `schema`. Supported: type (or a list of types), properties/required,
    items/minItems/maxItems, enum, const, minimum/maximum/exclusive*, minLength/maxLength, string
    formats date/date-time/email/uri, anyOf/oneOf (first branch), allOf (merged), local $ref.
    Not supported (ignored): pattern, multipleOf, uniqueItems, additionalProperties beyond listing."""
    root = schema if root is None else root
    if not isinstance(schema, dict):
        return _words(rng, 2, 6)
    if "$ref" in schema:
        return schema_value(_resolve_ref(root, schema["$ref"]), rng, root, depth + 1)
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return rng.choice(list(schema["enum"]))
    for key in ("anyOf", "oneOf"):
        if schema.get(key):
            options = [s for s in schema[key] if not (isinstance(s, dict) and s.get("type") == "null")]
            return schema_value((options or schema[key])[0], rng, root, depth + 1)
    if schema.get("allOf"):
        merged: dict[str, Any] = {}
        for part in schema["allOf"]:
            part = _resolve_ref(root, part["$ref"]) if isinstance(part, dict) and "$ref" in part else part
            for k, v in (part or {}).items():
                merged[k] = {**merged[k], **v} if isinstance(v, dict) and isinstance(merged.get(k), dict) else v
        return schema_value({**{k: v for k, v in schema.items() if k != "allOf"}, **merged}, rng, root, depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind is None:
        kind = "object" if "properties" in schema else "array" if "items" in schema else "string"
    if kind == "object":
        props = schema.get("properties") or {}
        required = set(schema.get("required") or props)
        names = [n for n in props if depth < 6 or n in required]
        return {n: schema_value(props[n], rng, root, depth + 1) for n in names}
    if kind == "array":
        lo = int(schema.get("minItems", 1 if depth < 6 else 0))
        hi = int(schema.get("maxItems", lo + 3))
        count = rng.randint(lo, max(lo, min(hi, lo + 3)))
        return [schema_value(schema.get("items", {}), rng, root, depth + 1) for _ in range(count)]
    if kind == "string":
        return _string(schema, rng)
    if kind in ("number", "integer"):
        return _number(schema, rng, kind == "integer")
    if kind == "boolean":
        return rng.random() < 0.5
    return None


def _resolve_ref(root: Any, ref: str) -> Any:
    node = root
    for part in ref.lstrip("#").strip("/").split("/"):
        if part:
            node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def _string(schema: dict[str, Any], rng: random.Random) -> str:
    fmt = schema.get("format")
    if fmt == "date-time":
        return f"2024-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}T{rng.randint(0, 23):02d}:00:00Z"
    if fmt == "date":
        return f"2024-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
    if fmt == "email":
        return f"{rng.choice(WORDS[30:90])}@example.com"
    if fmt in ("uri", "url"):
        return f"https://example.com/{rng.choice(WORDS[30:90])}"
    text = _words(rng, 2, 8)
    lo, hi = int(schema.get("minLength", 0)), schema.get("maxLength")
    while len(text) < lo:
        text += " " + rng.choice(WORDS)
    if hi is not None and len(text) > int(hi):
        text = text[: int(hi)].rstrip() if lo <= len(text[: int(hi)].rstrip()) else text[: int(hi)]
    return text


def _bound(schema: dict[str, Any], plain: str, exclusive: str) -> tuple[float | None, bool]:
    """(bound, is_exclusive) from draft-4 (boolean exclusive*) or draft-6+ (numeric exclusive*) keywords."""
    excl = schema.get(exclusive)
    if isinstance(excl, bool):
        return (float(schema[plain]), excl) if plain in schema else (None, False)
    if excl is not None:
        return float(excl), True
    return (float(schema[plain]), False) if plain in schema else (None, False)


def _number(schema: dict[str, Any], rng: random.Random, integer: bool) -> float | int:
    lo, lo_excl = _bound(schema, "minimum", "exclusiveMinimum")
    hi, hi_excl = _bound(schema, "maximum", "exclusiveMaximum")
    if lo is None:
        lo, lo_excl = (hi - 100 if hi is not None else 0.0), False
    if hi is None:
        hi, hi_excl = lo + 100, False
    if integer:
        ilo = math.floor(lo) + 1 if lo_excl else math.ceil(lo)
        ihi = math.ceil(hi) - 1 if hi_excl else math.floor(hi)
        return rng.randint(ilo, max(ilo, ihi))
    value = lo + (0.05 + 0.9 * rng.random()) * (hi - lo)
    rounded = round(value, 2)
    return rounded if lo < rounded < hi else value


def json_text(key: bytes, fmt: Any) -> str:
    """The JSON answer for `format` ("json" or a schema object)."""
    rng = random.Random(key)
    if fmt == "json":
        value: Any = {rng.choice(WORDS[30:120]) + f"_{i}": _words(rng, 2, 8) for i in range(rng.randint(2, 4))}
    else:
        value = schema_value(fmt, rng)
    return json.dumps(value, ensure_ascii=False)
