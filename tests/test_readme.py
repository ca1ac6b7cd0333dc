"""The README's front door says what the code does: the columns of results.parquet it lists are the ones
assembled, its defaults table gives RunParams' defaults, and every docs page it links exists."""

from __future__ import annotations

import re
from pathlib import Path

from chunkwise.params import RunParams
from chunkwise.store.records import OUTCOME_FIELDS

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def section(title: str) -> str:
    start = README.index(f"\n## {title}\n")
    end = README.find("\n## ", start + 1)
    return README[start:end]


def table_names(text: str) -> list[str]:
    """The backticked names in the first cell of each row of the section's first table."""
    rows = [line for line in text.splitlines() if line.startswith("| `")]
    return [name for row in rows for name in re.findall(r"`([a-z_]+)`", row.split("|")[1])]


def test_the_results_columns_listed_are_the_ones_written():
    listed = table_names(section("What comes out"))
    written = ["input_row", "id", *[c for c in OUTCOME_FIELDS if c != "_row"]]
    assert sorted(listed) == sorted(written)


def test_the_defaults_table_gives_the_codes_defaults():
    table = section("Defaults")
    fields = RunParams.model_fields
    assert "| `--mode` | `independent` |" in table and fields["mode"].default == "independent"
    assert f"| `--num-ctx` | {fields['num_ctx'].default:,} tokens per slot" in table
    assert f"| `--parallel` | {fields['parallel'].default} |" in table
    assert f"| `--num-predict` | {fields['num_predict'].default} tokens |" in table
    assert f"| `--chunk-token-budget` | {fields['chunk_token_budget'].default:,} tokens |" in table
    assert f"| `--trim-threshold` | {fields['trim_threshold'].default} |" in table
    assert f"`--expected-answer-tokens` ({fields['expected_answer_tokens'].default})" in table


def test_every_linked_page_exists():
    links = set(re.findall(r"\]\(((?:docs/)[^)#]+)", README))
    assert {"docs/running.md", "docs/how-it-works.md", "docs/real-engines.md", "docs/development.md"} <= links
    assert all((ROOT / link).is_file() for link in links), sorted(link for link in links if not (ROOT / link).is_file())
    for page in (ROOT / "docs").glob("*.md"):
        for link in re.findall(r"\]\(([a-z-]+\.md)", page.read_text(encoding="utf-8")):
            assert (ROOT / "docs" / link).is_file(), f"{page.name} links to {link}, which does not exist"
