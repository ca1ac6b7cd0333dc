"""`keep_alive` as Ollama decodes it (api.Duration.UnmarshalJSON, research ollama.md section 1).

A JSON number is seconds; a string must be a Go duration (`time.ParseDuration`: "10m", "1h30m",
"-1m", "300ms"; the bare "0" is the only unitless string Go accepts, so "3600" is an error).
Any negative value means "keep loaded forever" (returned here as `math.inf`); 0 means "unload
right after this request".
"""

from __future__ import annotations

import math
import re

#: Seconds per Go duration unit.
_UNITS = {"ns": 1e-9, "us": 1e-6, "\u00b5s": 1e-6, "\u03bcs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_COMPONENT = re.compile(r"(\d*)(?:\.(\d*))?([^\d.]*)")


class DurationError(ValueError):
    """The message is Go's, so a 400 reads like Ollama's."""


def parse_go_duration(text: str) -> float:
    """Seconds in a Go duration string; raises DurationError with Go's wording."""
    original = text
    quoted = '"' + original + '"'
    sign = 1.0
    if text[:1] in "+-" and text:
        sign = -1.0 if text[0] == "-" else 1.0
        text = text[1:]
    if text == "0":
        return 0.0
    if not text:
        raise DurationError(f"time: invalid duration {quoted}")
    total = 0.0
    pos = 0
    while pos < len(text):
        match = _COMPONENT.match(text, pos)
        if match is None:  # the pattern's groups are all optional, so it matches any position
            raise DurationError(f"time: invalid duration {quoted}")
        whole, frac, unit = match.group(1), match.group(2), match.group(3)
        if not whole and not frac:
            raise DurationError(f"time: invalid duration {quoted}")
        if not unit:
            raise DurationError(f"time: missing unit in duration {quoted}")
        if unit not in _UNITS:
            raise DurationError(f'time: unknown unit "{unit}" in duration {quoted}')
        total += float(f"{whole or 0}.{frac or 0}") * _UNITS[unit]
        pos = match.end()
    return sign * total


def parse_keep_alive(value: object, default_s: float) -> float:
    """Seconds the model stays loaded after a request; `math.inf` = forever. None -> `default_s`."""
    if value is None:
        seconds = default_s
    elif isinstance(value, bool):
        raise DurationError("Unsupported type: 'bool'")
    elif isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str):
        seconds = parse_go_duration(value)
    else:  # Go's reflect.TypeOf of the decoded value (`v0.24.0:api/types.go` Duration.UnmarshalJSON)
        kind = "[]interface {}" if isinstance(value, list) else "map[string]interface {}"
        raise DurationError(f"Unsupported type: '{kind}'")
    return math.inf if seconds < 0 else seconds
