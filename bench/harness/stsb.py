"""The STS Benchmark test split shipped in ``bench/data/`` (origin and license in its README),
read by the one loader that the tests, the benchmark's workloads and the accuracy gate share."""

from __future__ import annotations

from pathlib import Path

DATA = Path(__file__).resolve().parents[1] / "data" / "stsb-test.tsv"  # bench/data/


def read_pairs(path: str | Path = DATA) -> list[tuple[float, str, str]]:
    """(gold score, sentence1, sentence2) rows: tab-separated, one header line, no quoting."""
    rows = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines()[1:], start=2):
        parts = line.split("\t")
        if len(parts) != 3:
            raise ValueError(f"{path}:{number}: expected 3 tab-separated columns, got {len(parts)}")
        rows.append((float(parts[0]), parts[1], parts[2]))
    if not rows:
        raise ValueError(f"no rows in {path}")
    return rows


def sentences(path: str | Path = DATA) -> list[str]:
    """sentence1 then sentence2 of every row, in file order (2,758, repeats kept)."""
    return [s for _, first, second in read_pairs(path) for s in (first, second)]


def unique_sentences(path: str | Path = DATA) -> list[str]:
    """Each distinct sentence once, in order of first appearance (2,552)."""
    return list(dict.fromkeys(sentences(path)))
