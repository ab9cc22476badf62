"""The documentation's relative links resolve: every markdown link and image in ``README.md`` and
``docs/*.md`` (``[x](path)``, ``[x](path#anchor)``, ``[x](#anchor)``, reference definitions and
HTML ``href``/``src``) names a file or folder that exists in the repository, and every ``#anchor``
names a heading of the target markdown file as GitHub slugs it (or an explicit ``<a id>``/``name``).
Web links (http, https, mailto, any scheme) are skipped: no network. Links inside code (fenced
blocks, indented blocks, inline spans) are not links and are not checked."""

from __future__ import annotations

import functools
import re
from pathlib import Path
from urllib.parse import unquote

import pytest

from paths import ROOT

FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
INLINE_CODE = re.compile(r"(`+)(?:(?!\1).)+?\1")
# [text](target) and ![alt](target), target optionally in <...> and followed by a "title".
INLINE_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*(<[^>]*>|[^()\s]*(?:\([^()\s]*\)[^()\s]*)*)"
                         r"(?:\s+(?:\"[^\"]*\"|'[^']*'|\([^)]*\)))?\s*\)")
REFERENCE_DEFINITION = re.compile(r"^ {0,3}\[[^\]]+\]:\s*(<[^>]*>|\S+)")
HTML_LINK = re.compile(r"<(?:a|img)\b[^>]*?\b(?:href|src)\s*=\s*[\"']([^\"']*)[\"']", re.I)
HTML_ANCHOR = re.compile(r"<a\b[^>]*?\b(?:id|name)\s*=\s*[\"']([^\"']+)[\"']", re.I)
HEADING = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.*?)(?:[ \t]+#+)?[ \t]*$")
SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


def pages() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def prose_lines(text: str, blank_code: bool = True) -> list[tuple[int, str]]:
    """(line number, line) for each line outside code: fenced and indented blocks dropped, inline
    code spans blanked (kept with ``blank_code=False``: a heading's code is part of its anchor)."""
    out, fence, previous_blank, indented = [], None, True, False
    for number, line in enumerate(text.splitlines(), 1):
        opener = FENCE.match(line)
        if fence:
            if opener and opener.group(1)[0] == fence[0] and len(opener.group(1)) >= len(fence):
                fence = None
            continue
        if opener:
            fence = opener.group(1)
            continue
        blank = not line.strip()
        indented = (line.startswith("    ") or line.startswith("\t")) and not blank and (previous_blank or indented)
        if not blank and not indented:
            out.append((number, INLINE_CODE.sub(lambda m: " " * len(m.group(0)), line) if blank_code else line))
        previous_blank = blank
    return out


def links(text: str) -> list[tuple[int, str]]:
    """(line number, target) of every link and image in the prose of a markdown text."""
    found = []
    for number, line in prose_lines(text):
        for pattern in (INLINE_LINK, REFERENCE_DEFINITION, HTML_LINK):
            for match in pattern.finditer(line):
                target = match.group(1).strip()
                if target.startswith("<") and target.endswith(">"):
                    target = target[1:-1]
                found.append((number, target))
    return found


def slug(heading: str) -> str:
    """GitHub's anchor for a heading's text: the rendered text (markup gone), lower-cased, every
    character but letters, digits, spaces, hyphens and underscores dropped, spaces made hyphens."""
    text = re.sub(r"!?\[((?:[^\[\]]|\[[^\[\]]*\])*)\]\([^)]*\)", r"\1", heading)  # links and images: their text
    text = re.sub(r"<[^>]+>", "", text)                                            # HTML tags
    text = text.replace("`", "")
    text = re.sub(r"\*+", "", text)
    text = re.sub(r"(?<!\w)_+|_+(?!\w)", "", text)                                 # _emphasis_, not snake_case
    text = text.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


@functools.cache
def anchors(page: Path) -> frozenset[str]:
    """Every anchor GitHub gives a markdown file: its headings' slugs (a repeated one gets -1, -2,
    ...) and explicit <a id="..."> or name="..."."""
    seen: dict[str, int] = {}
    result = set()
    text = page.read_text(encoding="utf-8")
    for _, line in prose_lines(text):
        result.update(HTML_ANCHOR.findall(line))
    for _, line in prose_lines(text, blank_code=False):
        match = HEADING.match(line)
        if not match:
            continue
        base = slug(match.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        result.add(base if count == 0 else f"{base}-{count}")
    return frozenset(result)


def broken(page: Path, target: str) -> str | None:
    """Why a link from ``page`` to ``target`` does not resolve, or None when it does (or is a web link)."""
    if not target or SCHEME.match(target) or target.startswith("//"):
        return None
    path, _, anchor = target.partition("#")
    path, anchor = unquote(path.split("?", 1)[0]), unquote(anchor)
    if not path:
        destination = page
    elif path.startswith("/"):
        destination = ROOT / path.lstrip("/")
    else:
        destination = page.parent / path
    destination = destination.resolve()
    if not destination.is_relative_to(ROOT):
        return f"{target}: outside the repository"
    if not destination.exists():
        return f"{target}: no such file or folder ({destination.relative_to(ROOT)})"
    if anchor:
        if destination.suffix.lower() != ".md" or not destination.is_file():
            return f"{target}: an anchor into something that is not a markdown file"
        if anchor not in anchors(destination):
            return f"{target}: no heading with anchor #{anchor} in {destination.relative_to(ROOT)}"
    return None


def problems(page: Path) -> list[str]:
    name = page.relative_to(ROOT)
    return [f"{name}:{number}: {why}" for number, target in links(page.read_text(encoding="utf-8"))
            if (why := broken(page, target))]


@pytest.mark.parametrize("page", pages(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_relative_link_resolves(page):
    assert page.is_file()
    found = problems(page)
    assert not found, "broken links:\n  " + "\n  ".join(found)


def test_the_docs_folder_has_pages():
    assert len(pages()) > 1, "no docs/*.md pages"


# The checker itself, on made-up text and pages.

def test_slugs_are_githubs():
    assert slug("`POST /v1/embeddings` (also `/embeddings`) — OpenAI's shape") == \
        "post-v1embeddings-also-embeddings--openais-shape"
    assert slug("Memory: preload, copy-on-write, shared weights") == "memory-preload-copy-on-write-shared-weights"
    assert slug("HTTPS (TLS)") == "https-tls"
    assert slug("**Bold** and [a link](x.md) and `snake_case`") == "bold-and-a-link-and-snake_case"


def test_links_are_found_outside_code_only():
    text = ("see [a](a.md) and ![img](i.png \"title\") and [b](b.md#x)\n"
            "`[not](code.md)` and <a href=\"h.md\">h</a>\n\n"
            "```\n[not](fenced.md)\n```\n\n"
            "    [not](indented.md)\n\n"
            "[ref]: r.md\n"
            "[web](https://example.com) [mail](mailto:x@example.com)\n")
    assert [t for _, t in links(text)] == ["a.md", "i.png", "b.md#x", "h.md", "r.md",
                                           "https://example.com", "mailto:x@example.com"]


def test_broken_files_and_anchors_are_caught():
    readme = ROOT / "README.md"
    assert broken(readme, "https://example.com/nowhere") is None
    assert broken(readme, "Makefile") is None
    assert broken(readme, "docs/") is None
    assert broken(readme, "#documentation") is None
    assert "no such file" in broken(readme, "docs/no-such-page.md")
    assert "no heading" in broken(readme, "#no-such-heading")
    assert "no heading" in broken(readme, "docs/development.md#no-such-heading")
    assert "not a markdown file" in broken(readme, "Makefile#serve")
    assert "outside the repository" in broken(readme, "../outside.md")


def test_repeated_headings_get_numbered_anchors(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# Notes\n\n## Notes\n\n```\n# not a heading\n```\n\n## Notes\n<a id=\"here\"></a>\n"
                    "## `POST /embed` — the route\n", encoding="utf-8")
    assert anchors(page) >= {"notes", "notes-1", "notes-2", "here", "post-embed--the-route"}
    assert "not-a-heading" not in anchors(page)
