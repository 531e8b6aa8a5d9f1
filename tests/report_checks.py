"""Reading a report's index.html as a browser would: the visible text, the tables and the images.

Used by the report tests (tests/test_report.py) and by the end-to-end demo and pipeline tests, so every
report l2g writes is checked the same way: no Markdown syntax on screen, every table a real <table>,
every image present and a valid PNG, and the provenance (commit, seed, torch, machine) stated.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

import torch
from PIL import Image

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
INVISIBLE = {"head", "style", "script", "title"}
# What Markdown leaves on screen when it is pasted into HTML instead of rendered.
MARKDOWN_TRACES = {
    "table row": re.compile(r"^\s*\|.*\|\s*$", re.MULTILINE),
    "table rule": re.compile(r"\|\s*:?-{3,}:?\s*\|"),
    "image": re.compile(r"!\[[^\]]*\]\([^)]*\)"),
    "bold": re.compile(r"\*\*[^*\n]+\*\*"),
    "heading": re.compile(r"^#{1,6} ", re.MULTILINE),
    "code fence": re.compile(r"^```", re.MULTILINE),
}


@dataclass
class ParsedTable:
    headers: list[str] = field(default_factory=list)
    rows: list[list[str]] = field(default_factory=list)


class PageParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.text: list[str] = []  # visible text, outside <pre>
        self.pre_text: list[str] = []
        self.images: list[str] = []
        self.tables: list[ParsedTable] = []
        self.headings: list[str] = []
        self._stack: list[str] = []
        self._cell: list[str] | None = None
        self._row: list[str] | None = None
        self._heading: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in ("img", "br", "meta"):
            self._stack.append(tag)
        if tag == "img":
            self.images.append(dict(attrs).get("src") or "")
        elif tag == "table":
            self.tables.append(ParsedTable())
        elif tag == "tr":
            self._row = []
        elif tag in ("td", "th"):
            self._cell = []
        elif tag in ("h1", "h2", "h3"):
            self._heading = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None and self._row is not None:
            self._row.append("".join(self._cell).strip())
            self._cell = None
        elif tag == "tr" and self._row is not None and self.tables:
            table = self.tables[-1]
            if "thead" in self._stack:
                table.headers = self._row
            else:
                table.rows.append(self._row)
            self._row = None
        elif tag in ("h1", "h2", "h3") and self._heading is not None:
            self.headings.append("".join(self._heading).strip())
            self._heading = None
        if tag in self._stack:
            while self._stack and self._stack.pop() != tag:
                pass

    def handle_data(self, data: str) -> None:
        if INVISIBLE & set(self._stack):
            return
        (self.pre_text if "pre" in self._stack else self.text).append(data)
        if self._cell is not None:
            self._cell.append(data)
        if self._heading is not None:
            self._heading.append(data)


def parse_page(index: Path) -> PageParser:
    parser = PageParser()
    parser.feed(index.read_text(encoding="utf-8"))
    parser.close()
    return parser


def check_report(index: Path, expected_tables: int | None = None, seed: int | None = None) -> PageParser:
    """Assert what a reader of ``index`` would see is right; return the parsed page for more checks."""
    page = parse_page(index)
    visible = "".join(page.text)
    for name, pattern in MARKDOWN_TRACES.items():
        found = pattern.search(visible)
        assert found is None, f"raw Markdown {name} on screen: {found.group(0)!r}"
    source = index.read_text(encoding="utf-8")
    assert source.count("<table>") == source.count("</table>") == len(page.tables)
    if expected_tables is not None:
        assert len(page.tables) == expected_tables, [t.headers for t in page.tables]
    for table in page.tables:
        assert table.headers, "a table without a header row"
        assert all(len(row) == len(table.headers) for row in table.rows), table
    assert page.images, "a report without figures"
    for name in page.images:
        path = index.parent / name
        assert path.is_file(), f"missing image {name}"
        data = path.read_bytes()
        assert data.startswith(PNG_SIGNATURE), f"{name} is not a PNG"
        with Image.open(path) as image:
            image.verify()  # raises on a truncated or corrupt file
        with Image.open(path) as image:
            assert image.width > 10 and image.height > 10, name
    provenance = provenance_of(page)
    assert re.fullmatch(r"[0-9a-f]{40}( \+ local changes)?|unknown \(.*\)", provenance["commit (this report)"])
    assert provenance["torch"] == torch.__version__
    assert "cores" in provenance["machine"]
    if seed is not None:
        assert provenance["seed"] == str(seed)
    assert "<script" not in source.lower() and "http" not in source.lower()
    return page


def provenance_of(page: PageParser) -> dict[str, str]:
    """The name -> value rows of the report's provenance table (the one with a "commit" row)."""
    for table in page.tables:
        rows = {row[0]: row[1] for row in table.rows if len(row) == 2}
        if any(name.startswith("commit") for name in rows):
            return rows
    raise AssertionError("no provenance table (commit, seed, torch, machine)")


def table_with_header(page: PageParser, first_header: str) -> ParsedTable:
    for table in page.tables:
        if table.headers and table.headers[0] == first_header:
            return table
    raise AssertionError(f"no table whose first column is {first_header!r}: {[t.headers for t in page.tables]}")
