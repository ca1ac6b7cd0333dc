"""The house rules, checked on the code itself.

1. Logic without Prefect: importing any `chunkwise` module except `chunkwise.commands` (the CLI, the only
   room that starts flows) loads neither `prefect` nor the glue packages `flows` and `tasks`.
2. The simulator is a witness, not an accomplice: no production module imports `chunkwise.harness.sim`, except
   the rooms that exist to drive it (`SIM_USERS`). Read from the source with `ast`, so an import inside
   a function counts as much as one at the top.
3. One owner per server kind: the API is compared (`api ==`, `api !=`) in one module, the factory
   `chunkwise.servers`, and no module outside the backend rooms (`chunkwise/ollama/`, `chunkwise/openai/`)
   and that factory imports a concrete client or backend: everything else asks the backend object.
4. One layout: the names of a run directory's files and folders are spelled in `chunkwise/store/layout.py`
   only (the development harness's own files aside).
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN_AT_IMPORT = ("prefect", "flows", "tasks")
#: Production code that may import the simulator: measuring a server (and its fake-server tests), the
#: sample-request generator (its tokenizer sizes the sample texts), and the commands that start it.
SIM_USERS = (
    "chunkwise/harness/sim/",
    "chunkwise/measure/",
    "chunkwise/commands/sim.py",
    "chunkwise/commands/demo.py",
)
PRODUCTION = ("chunkwise", "flows", "tasks")
#: The backend rooms and their one factory (rule 3), and what only they may import.
BACKEND_OWNERS = ("chunkwise/ollama/", "chunkwise/openai/", "chunkwise/servers.py")
CONCRETE = ("chunkwise.ollama.client", "chunkwise.openai.client", "chunkwise.ollama.backend",
            "chunkwise.openai.backend")
#: A run directory's names as string literals (rule 4), and where else they may appear.
LAYOUT_NAMES = re.compile(r"""["'](manifest\.json|requests\.parquet|rejects\.parquet|staged\.json|results\.parquet|"""
                          r"""stats\.json|gpu_samples\.csv|batch_output\.jsonl|batch_errors\.jsonl|cluster\.json|"""
                          r"""shards\.json|prefect-results|\.lock|\.write-test|ledger|chunks|locks|hosts)["']""")
LAYOUT_OWNERS = ("chunkwise/store/layout.py", "chunkwise/harness/",
                 "chunkwise/commands/sample.py")  # its hint names an input file, not a run directory's
PATH_USE = re.compile(r"(/\s*|join\(.*,\s*|^\s*[A-Z_][A-Z0-9_, ]*=\s*)$")
API_TEST = re.compile(r"\bapi\s*[!=]=|[!=]=\s*[\w.]*\bapi\b")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def production_files() -> list[Path]:
    return sorted(p for top in PRODUCTION for p in (ROOT / top).rglob("*.py"))


def logic_modules() -> list[str]:
    """Every chunkwise module outside chunkwise.commands; `__main__` runs the CLI, so it is the CLI."""
    names = (module_name(p) for p in (ROOT / "chunkwise").rglob("*.py"))
    return sorted(n for n in names if not n.startswith("chunkwise.commands") and n != "chunkwise.__main__")


# Imports each module in turn in one fresh interpreter and records what the forbidden set looks like
# after each. Imports only ever add to sys.modules, so "nothing forbidden after importing all of them"
# is the same as "no single one loads anything forbidden", and the first module after which a forbidden
# name appears is one whose import loads it. One process instead of one per module keeps this test in the
# pure tier (about 1 s instead of about 40 s here).
PROBE = """
import importlib, json, sys
forbidden, found = {forbidden!r}, {{}}
for name in {modules!r}:
    importlib.import_module(name)
    for bad in forbidden:
        if bad in sys.modules and bad not in found:
            found[bad] = name
print(json.dumps(found))
"""


def first_importers(modules: list[str]) -> dict[str, str]:
    """{forbidden package: the first of `modules` whose import loaded it}, from a fresh interpreter."""
    code = PROBE.format(forbidden=FORBIDDEN_AT_IMPORT, modules=modules)
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={"PATH": "", "PYTHONPATH": str(ROOT), "PYTHONNOUSERSITE": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


def test_logic_modules_load_neither_prefect_nor_flows_nor_tasks() -> None:
    modules = logic_modules()
    assert "chunkwise.run.chunk" in modules and "chunkwise.results.finish" in modules  # the walk found the rooms
    found = first_importers(modules)
    assert found == {}, "; ".join(f"importing {mod} loads {bad}" for bad, mod in found.items())


def imports_of(source: str, module: str, *, is_package: bool = False) -> set[str]:
    """Every module that `source` (the text of `module`) imports, wherever the import statement is,
    relative imports resolved."""
    package = module.split(".") if is_package else module.split(".")[:-1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join([*package[: len(package) - node.level + 1], *([base] if base else [])])
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def imported_modules(path: Path) -> set[str]:
    return imports_of(path.read_text(encoding="utf-8"), module_name(path), is_package=path.name == "__init__.py")


def sim_importers() -> list[str]:
    offenders = []
    for path in production_files():
        rel = path.relative_to(ROOT).as_posix()
        if rel.startswith(SIM_USERS):
            continue
        hits = sorted(m for m in imported_modules(path)
                      if m == "chunkwise.harness.sim" or m.startswith("chunkwise.harness.sim."))
        if hits:
            offenders.append(f"{rel} imports {', '.join(hits)}")
    return offenders


def test_only_the_simulator_s_users_import_it() -> None:
    assert len(production_files()) > 50  # the walk found the package
    assert sim_importers() == []


def concrete_importers() -> list[str]:
    offenders = []
    for path in production_files():
        rel = path.relative_to(ROOT).as_posix()
        if rel.startswith(BACKEND_OWNERS):
            continue
        hits = sorted(m for m in imported_modules(path)
                      if m in CONCRETE or m.startswith(tuple(c + "." for c in CONCRETE)))
        if hits:
            offenders.append(f"{rel} imports {', '.join(hits)}")
    return offenders


def api_comparisons() -> dict[str, list[int]]:
    """{module: line numbers} of every comparison with an `api` value in production code."""
    found: dict[str, list[int]] = {}
    for path in production_files():
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if API_TEST.search(line.split("#", 1)[0]):
                found.setdefault(path.relative_to(ROOT).as_posix(), []).append(number)
    return found


def layout_spellings() -> list[str]:
    """`file:line` of every run-directory name used as a path outside the layout: joined (`/ "ledger"`,
    `os.path.join(d, "stats.json")`) or named as a constant (`CSV_NAME = "gpu_samples.csv"`). The same words
    as dict keys (`summary["chunks"]`) or values (`"end_from": "ledger"`) are not paths."""
    found = []
    for path in production_files():
        rel = path.relative_to(ROOT).as_posix()
        if rel.startswith(LAYOUT_OWNERS):
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            for match in LAYOUT_NAMES.finditer(line):
                if PATH_USE.search(line[:match.start()]):
                    found.append(f"{rel}:{number}: {line.strip()}")
    return found


def test_only_the_layout_spells_a_run_directory() -> None:
    assert layout_spellings() == []


def test_the_layout_reader_tells_a_path_from_a_key() -> None:
    paths = ['x = run_dir / "ledger"', "os.path.join(d, 'stats.json')", 'LOCKS_DIR = "locks"',
             'open(root / ".lock")', 'A, B = "requests.parquet", "x"']
    keys = ['summary["chunks"]', '{"hosts": rows}', '"end_from": "ledger" if x else None', 'row.get("chunks")']
    assert all(PATH_USE.search(line[:LAYOUT_NAMES.search(line).start()]) for line in paths)
    assert not any(PATH_USE.search(line[:LAYOUT_NAMES.search(line).start()]) for line in keys)


def test_only_the_backend_rooms_and_their_factory_import_a_concrete_client() -> None:
    assert concrete_importers() == []


def test_the_api_is_compared_in_one_module_the_factory() -> None:
    assert list(api_comparisons()) == ["chunkwise/servers.py"]


def test_the_rule_readers_see_what_they_look_for() -> None:
    assert API_TEST.search('if params.api == "openai":') and API_TEST.search("x = args.api != 'ollama'")
    assert API_TEST.search('if "openai" == ctx.params.api:') and not API_TEST.search("rapid == 3")
    source = "def f():\n    from chunkwise.ollama.client import OllamaClient\n"
    assert "chunkwise.ollama.client.OllamaClient" in imports_of(source, "chunkwise.run.x")


def test_the_import_reader_sees_imports_inside_functions_and_relative_ones() -> None:
    source = ("import os\n\ndef f():\n    from ..harness.sim import tokenizer\n"
              "    import chunkwise.harness.sim.options\n")
    found = imports_of(source, "chunkwise.run.probe")
    assert {"os", "chunkwise.harness.sim", "chunkwise.harness.sim.tokenizer",
            "chunkwise.harness.sim.options"} <= found
    assert "chunkwise.harness.sim.harness" in imports_of("from .harness import x", "chunkwise.harness.sim",
                                                         is_package=True)
