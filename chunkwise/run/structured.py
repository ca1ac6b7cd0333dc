"""The structured-output check behind the `invalid_output` failure class (`format` in the run parameters).

An answer must be JSON and, when `format` is a schema, valid for it under JSON Schema draft 2020-12
(the draft pydantic's `model_json_schema()` writes, which is how most `format` schemas are made),
checked by the `jsonschema` package. Every keyword counts, including those Ollama's grammar does not
enforce while generating (llama.cpp's `json-schema-to-grammar` skips some): an answer that breaks the
schema the run asked for is not a valid answer, whichever side let it through. `format` annotations
(`date-time`, `email`) are not asserted, as the specification leaves them optional.
The schema itself is checked once, when the run parameters are validated (`chunkwise.schemas`).
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

from jsonschema import Draft202012Validator

#: Problems reported per answer; the rest are left out of the one-line reason.
MAX_REPORTED = 3


@lru_cache(maxsize=8)
def _validator(schema_json: str) -> Draft202012Validator:
    return Draft202012Validator(json.loads(schema_json))


def schema_errors(value: Any, schema: dict[str, Any]) -> list[str]:
    """Every way `value` breaks `schema`, as `path: problem` strings ordered by path (empty when valid)."""
    validator = _validator(json.dumps(schema, sort_keys=True))
    errors = sorted(validator.iter_errors(value), key=lambda e: (e.json_path, e.message))
    return [f"{e.json_path}: {e.message}" for e in errors]


def check_answer(text: str, schema: dict[str, Any] | str) -> str | None:
    """None when `text` is JSON valid for `schema` (or any JSON for `format: "json"`), else why not."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        return f"answer is not valid JSON ({exc.msg} at character {exc.pos})"
    if not isinstance(schema, dict):
        return None
    errors = schema_errors(value, schema)
    return "; ".join(errors[:MAX_REPORTED]) if errors else None
