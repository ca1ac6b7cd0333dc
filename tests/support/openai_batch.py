"""What an OpenAI Batch API consumer reads from the output and error files, as pydantic models that refuse
anything else: the per-line object `BatchRequestOutput` of OpenAI's API specification ("The per-line object of
the batch output and error files": `id`, `custom_id`, `response` {`status_code`, `request_id`, `body`} or
null, `error` {`code`, `message`} or null), with a `chat.completion` object as the body of a 200 response
(`id`, `object`, `created`, `model`, `choices` [{`index`, `message` {`role`, `content`}, `finish_reason`}],
`usage` {`prompt_tokens`, `completion_tokens`, `total_tokens`}). Extra fields are allowed, as in the spec.

`check_batch_files` reads both files and checks what a consumer relies on: every line parses, a 200 body in
every output line, no response in an error line, and each input `custom_id` in exactly one line of the two.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, StrictInt, StrictStr


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)


class Message(_Open):
    role: Literal["assistant"]
    content: StrictStr | None


class Choice(_Open):
    index: StrictInt
    message: Message
    finish_reason: Literal["stop", "length", "content_filter", "tool_calls", "function_call"]


class Usage(_Open):
    prompt_tokens: StrictInt
    completion_tokens: StrictInt
    total_tokens: StrictInt


class ChatCompletion(_Open):
    id: StrictStr
    object: Literal["chat.completion"]
    created: StrictInt
    model: StrictStr
    choices: list[Choice]
    usage: Usage


class Response(_Open):
    status_code: StrictInt
    request_id: StrictStr
    body: ChatCompletion


class Error(_Open):
    code: StrictStr
    message: StrictStr


class BatchRequestOutput(_Open):
    id: StrictStr
    custom_id: StrictStr
    response: Response | None
    error: Error | None


def read_lines(path: Path) -> list[BatchRequestOutput]:
    return [BatchRequestOutput.model_validate(json.loads(line)) for line in path.read_text().splitlines()]


def check_batch_files(output: Path, errors: Path, custom_ids: list[str]) -> tuple[list[BatchRequestOutput],
                                                                                 list[BatchRequestOutput]]:
    """Both files as a consumer reads them; raises AssertionError (or pydantic's ValidationError) otherwise."""
    out, err = read_lines(output), read_lines(errors)
    for item in out:
        assert item.response is not None and item.response.status_code == 200 and item.error is None, item
        usage = item.response.body.usage
        assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    for item in err:
        assert item.response is None and item.error is not None and item.error.message, item
    seen = [item.custom_id for item in out + err]
    assert sorted(seen) == sorted(custom_ids), "every request in exactly one line of the two files"
    assert len({item.id for item in out + err}) == len(seen)
    return out, err
