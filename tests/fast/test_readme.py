"""Generated documentation stays generated: the README's configuration table is the one
``python -m embedder.config`` prints from the settings registry, and the metrics table in
``docs/operations.md`` the one ``python -m metrics.definitions`` prints from the metric definitions:
a row added, removed or changed in either fails here. The README also stays a user's README: the
two commands, at most 300 lines, and a link to every page of ``docs/``."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from embedder import config
from metrics import definitions
from paths import ROOT

README = ROOT / "README.md"
OPERATIONS = ROOT / "docs" / "operations.md"
MAX_README_LINES = 300

BEGIN, END = "<!-- settings table: python -m embedder.config -->", "<!-- end of settings table -->"
FIX = "regenerate it: python -m embedder.config, pasted between the markers in README.md"

METRICS_BEGIN, METRICS_END = "<!-- metrics table: python -m metrics.definitions -->", "<!-- end of metrics table -->"
METRICS_FIX = "regenerate it: python -m metrics.definitions, pasted between the markers in docs/operations.md"


def marked_table(text: str, begin: str = BEGIN, end: str = END, fix: str = FIX) -> str:
    assert text.count(begin) == 1 and text.count(end) == 1, f"the table markers are missing or repeated; {fix}"
    return text.split(begin, 1)[1].split(end, 1)[0].strip() + "\n"


def rows(table: str) -> dict[str, str]:
    return {line.split("|")[1].strip(): line for line in table.splitlines()[2:]}


def check(text: str) -> None:
    documented, declared = rows(marked_table(text)), rows(config.markdown_table())
    assert set(documented) == set(declared), (
        f"README rows without a setting: {sorted(set(documented) - set(declared))}; settings missing "
        f"from the README: {sorted(set(declared) - set(documented))}; {FIX}")
    for name, line in declared.items():
        assert documented[name] == line, f"{name} differs:\n  README: {documented[name]}\n  code:   {line}\n{FIX}"


def test_readme_table_is_the_registry():
    check(README.read_text(encoding="utf-8"))


def test_the_command_prints_the_table():
    out = subprocess.run([sys.executable, "-m", "embedder.config"], cwd=ROOT, capture_output=True,
                         text=True, timeout=60, check=True).stdout
    assert out == config.markdown_table()
    assert all(f"`{spec.env}`" in out for spec in config.specs())


def test_a_row_the_code_does_not_have_fails():
    text = README.read_text(encoding="utf-8")
    extra = "| `EMBEDDER_TURBO` | `false` | go faster |\n" + END
    with pytest.raises(AssertionError, match="EMBEDDER_TURBO"):
        check(text.replace(END, extra, 1))


def test_a_changed_default_fails():
    text = README.read_text(encoding="utf-8")
    changed = re.sub(r"(\| `EMBEDDER_MAX_BATCH_SIZE` \| )`64`", r"\1`65`", text)
    assert changed != text
    with pytest.raises(AssertionError, match="EMBEDDER_MAX_BATCH_SIZE` differs"):
        check(changed)


def test_a_missing_row_fails():
    text = README.read_text(encoding="utf-8")
    without = "\n".join(line for line in text.splitlines() if "`EMBEDDER_STALL_TIMEOUT`" not in line)
    with pytest.raises(AssertionError, match="EMBEDDER_STALL_TIMEOUT"):
        check(without)


def check_metrics(text: str) -> None:
    documented = rows(marked_table(text, METRICS_BEGIN, METRICS_END, METRICS_FIX))
    declared = rows(definitions.markdown_table())
    assert documented == declared, (
        f"documented metrics without a definition: {sorted(set(documented) - set(declared))}; "
        f"definitions missing from docs/operations.md: {sorted(set(declared) - set(documented))}; changed: "
        f"{sorted(k for k in set(documented) & set(declared) if documented[k] != declared[k])}; {METRICS_FIX}")


def test_metrics_table_is_the_definitions():
    check_metrics(OPERATIONS.read_text(encoding="utf-8"))
    out = subprocess.run([sys.executable, "-m", "metrics.definitions"], cwd=ROOT, capture_output=True,
                         text=True, timeout=60, check=True).stdout
    assert out == definitions.markdown_table()


def test_a_missing_metric_fails():
    text = OPERATIONS.read_text(encoding="utf-8")
    without = "\n".join(line for line in text.splitlines() if "`embedder_batch_padding_ratio{model}`" not in line)
    with pytest.raises(AssertionError, match="embedder_batch_padding_ratio"):
        check_metrics(without)


def test_each_generated_table_lives_in_one_place():
    """A copy of a generated table elsewhere would drift unchecked."""
    pages = [README, *sorted((ROOT / "docs").glob("*.md"))]
    for begin, home in ((BEGIN, README), (METRICS_BEGIN, OPERATIONS)):
        holders = [page.relative_to(ROOT).as_posix() for page in pages if begin in page.read_text(encoding="utf-8")]
        assert holders == [home.relative_to(ROOT).as_posix()], f"{begin} found in {holders}"


def test_readme_keeps_the_two_commands():
    text = README.read_text(encoding="utf-8")
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    for target in ("serve", "test"):
        assert re.search(rf"^make {target}\b", text, re.M), f"README.md lost `make {target}`"
        assert re.search(rf"^{target}:", makefile, re.M), f"the Makefile has no `{target}` target"
    assert "make test" in (ROOT / ".ci" / "run").read_text(encoding="utf-8")


def test_readme_stays_a_users_readme():
    lines = README.read_text(encoding="utf-8").count("\n")
    assert lines <= MAX_README_LINES, (
        f"README.md has {lines} lines (at most {MAX_README_LINES}): move details to a page in docs/")


def test_readme_links_every_docs_page():
    text = README.read_text(encoding="utf-8")
    pages = sorted((ROOT / "docs").glob("*.md"))
    assert pages, "docs/ has no pages"
    unlinked = [p.name for p in pages if f"](docs/{p.name})" not in text and f"](docs/{p.name}#" not in text]
    assert not unlinked, f"README.md links no page {unlinked}: add each to its Documentation section"


def test_the_supported_models_table_is_the_tested_kinds():
    """Every row of the README's supported-models table is a kind the architecture tests build and
    serve (tests/integration/test_architectures.py and test_architectures_onnx.py), and every kind
    they test has its row."""
    import tiny_models

    text = README.read_text(encoding="utf-8")
    block = text.split("<!-- supported models:", 1)[1].split("<!-- end of supported models -->", 1)[0]
    kinds = re.findall(r"^\| `([a-z0-9-]+)` \|", block, flags=re.M)
    assert kinds == list(tiny_models.KINDS)


def test_readme_names_every_tested_reranker():
    import tiny_models

    section = README.read_text(encoding="utf-8").split("## Several models and rerankers")[1].split("\n## ")[0]
    assert all(f"`{kind}`" in section for kind in tiny_models.RERANKER_KINDS)
