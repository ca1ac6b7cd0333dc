"""`make test` runs every tier but `ollama_next`, and `make test-ollama-next` runs exactly that tier.

The `-m` expressions of the two Makefile recipes, evaluated by pytest's own marker-expression parser
against the markers the real-Ollama test modules carry. Editing either recipe or renaming a marker cannot
then silently put v0.33.0's build (~13 minutes more on the CI machine) into `make test`, or drop the
v0.24.0 tier from it, or leave `make test-ollama-next` selecting nothing.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from _pytest.mark.expression import Expression

ROOT = Path(__file__).resolve().parent.parent


def recipe_marker_expression(target: str, text: str | None = None) -> str:
    """The `-m` argument of the pytest line in the recipe of `target` (in the Makefile, or in `text`)."""
    text = (ROOT / "Makefile").read_text() if text is None else text
    match = re.search(rf"^{re.escape(target)}:.*\n((?:\t.*\n)+)", text, re.MULTILINE)
    assert match, f"no recipe for `{target}` in the Makefile"
    line = next((ln for ln in match[1].splitlines() if "pytest" in ln), None)
    assert line is not None, f"the `{target}` recipe runs no pytest"
    words = shlex.split(line.strip())
    words = words[words.index("pytest") + 1:]  # past `python -m pytest`
    assert "-m" in words, f"the `{target}` recipe selects no marker expression: {line.strip()}"
    return words[words.index("-m") + 1]


def markers(*objects: object) -> set[str]:
    """The marker names on a module (`pytestmark`) and/or a test function (its decorators)."""
    names: set[str] = set()
    for obj in objects:
        marks = getattr(obj, "pytestmark", [])
        names |= {mark.name for mark in (marks if isinstance(marks, list) else [marks])}
    return names


def selects(expression: str, names: set[str]) -> bool:
    return Expression.compile(expression).evaluate(lambda name, **_: name in names)


def tier_markers() -> dict[str, set[str]]:
    """Each real-Ollama test's markers, by a name for it."""
    import tests.test_real_ollama as real
    import tests.test_real_ollama_next as real_next
    import tests.test_sim_conformance as conformance

    return {
        "real 0.24.0 tier": markers(real),
        "real 0.33.0 tier": markers(real_next),
        "live conformance 0.24.0": markers(conformance.test_the_simulator_answers_like_the_running_ollama),
        "live conformance 0.33.0": markers(conformance.test_the_simulator_answers_like_the_running_ollama_next),
        "pure conformance (both versions' fixtures)": markers(
            conformance.test_the_simulator_answers_like_the_recorded_ollama) | {"pure"},
    }


@pytest.mark.parametrize(("target", "wanted"), [
    ("test", {"real 0.24.0 tier", "live conformance 0.24.0", "pure conformance (both versions' fixtures)"}),
    ("test-ollama-next", {"real 0.33.0 tier", "live conformance 0.33.0"}),
])
def test_each_make_target_selects_exactly_its_real_ollama_tiers(target, wanted) -> None:
    expression = recipe_marker_expression(target)
    chosen = {name for name, names in tier_markers().items() if selects(expression, names)}
    assert chosen == wanted, f"`make {target}` (-m {expression!r}) selects {sorted(chosen)}"


def test_the_reader_sees_a_recipe_s_expression_and_the_expression_decides() -> None:
    makefile = ('lint: x\n\t$(PY) -m pytest -m lint\n\ntest: $(STAMP) lint\n\t@echo go\n'
                '\t$(PY) -m pytest -q -m "not ollama_next and not gpu" tests\n\nother:\n\t$(PY) -m pytest\n')
    assert recipe_marker_expression("test", makefile) == "not ollama_next and not gpu"
    with pytest.raises(AssertionError, match="selects no marker expression"):
        recipe_marker_expression("other", makefile)
    assert selects("not ollama_next", {"ollama", "slow"})
    assert not selects("not ollama_next", {"ollama_next", "slow"})
