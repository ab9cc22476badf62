"""The README's configuration table is the one ``python -m embedder.config`` prints from the
settings registry, and its metrics table the one ``python -m metrics.definitions`` prints from the
metric definitions: a row added, removed or changed in either fails here."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from bench.servers import ROOT
from embedder import config
from metrics import definitions

README = ROOT / "README.md"
BEGIN, END = "<!-- settings table: python -m embedder.config -->", "<!-- end of settings table -->"
FIX = "regenerate it: python -m embedder.config, pasted between the markers in README.md"


METRICS_BEGIN, METRICS_END = "<!-- metrics table: python -m metrics.definitions -->", "<!-- end of metrics table -->"
METRICS_FIX = "regenerate it: python -m metrics.definitions, pasted between the markers in README.md"


def readme_table(text: str, begin: str = BEGIN, end: str = END, fix: str = FIX) -> str:
    assert text.count(begin) == 1 and text.count(end) == 1, f"README.md needs the table markers; {fix}"
    return text.split(begin, 1)[1].split(end, 1)[0].strip() + "\n"


def rows(table: str) -> dict[str, str]:
    return {line.split("|")[1].strip(): line for line in table.splitlines()[2:]}


def check(text: str) -> None:
    documented, declared = rows(readme_table(text)), rows(config.markdown_table())
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
    documented = rows(readme_table(text, METRICS_BEGIN, METRICS_END, METRICS_FIX))
    declared = rows(definitions.markdown_table())
    assert documented == declared, (
        f"README metrics without a definition: {sorted(set(documented) - set(declared))}; definitions "
        f"missing from the README: {sorted(set(declared) - set(documented))}; changed: "
        f"{sorted(k for k in set(documented) & set(declared) if documented[k] != declared[k])}; {METRICS_FIX}")


def test_readme_metrics_table_is_the_definitions():
    check_metrics(README.read_text(encoding="utf-8"))
    out = subprocess.run([sys.executable, "-m", "metrics.definitions"], cwd=ROOT, capture_output=True,
                         text=True, timeout=60, check=True).stdout
    assert out == definitions.markdown_table()


def test_a_metric_missing_from_the_readme_fails():
    text = README.read_text(encoding="utf-8")
    without = "\n".join(line for line in text.splitlines() if "`embedder_batch_padding_ratio`" not in line)
    with pytest.raises(AssertionError, match="embedder_batch_padding_ratio"):
        check_metrics(without)
