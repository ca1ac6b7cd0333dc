"""Whether a run's `format` is a JSON schema at all: draft 2020-12 (the draft pydantic's
`model_json_schema()` writes), checked by the `jsonschema` package once, when the run parameters are
validated (`chunkwise.params.RunParams`). Whether an answer follows the schema is the run's concern
(`chunkwise.run.structured`). A foundation module, so the parameters need nothing from the run.
"""

from __future__ import annotations

from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError


def schema_problem(schema: dict[str, Any]) -> str | None:
    """None when `schema` is a valid draft 2020-12 JSON schema, else what is wrong with it."""
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        where = exc.json_path if exc.path else "the schema"
        return f"{where}: {exc.message}"
    return None
