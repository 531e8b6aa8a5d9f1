"""The blocks a report is made of, each rendered to HTML and to Markdown from one structure.

A report is a :class:`Document`: a title and a list of blocks (:class:`Heading`, :class:`Paragraph`,
:class:`Table`, :class:`Figure`, :class:`Code`, :class:`Details`). Each block knows both renderings, so a
table is built once and cannot say one thing in ``index.html`` and another in ``report.md``. Text is
escaped here, never by the caller. The HTML page is self-contained: inline CSS, no script, no network
resource, images linked by relative file name.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from pathlib import Path

from l2g.atomic import write_text

CSS = """
body { font-family: sans-serif; margin: 2em auto; max-width: 1280px; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 0.3em 0; }
th, td { border: 1px solid #ccc; padding: 4px 8px; text-align: right; }
th { background: #f2f2f2; }
td.name, th.name { text-align: left; }
.swatch { display: inline-block; width: 1em; height: 1em; border: 1px solid #888;
          vertical-align: middle; margin-right: 0.4em; }
img { max-width: 100%; height: auto; border: 1px solid #ddd; }
figure { margin: 0.5em 0 1.5em 0; }
figcaption { color: #555; font-size: 90%; }
pre { background: #f6f6f6; padding: 1em; overflow-x: auto; }
.note { color: #555; font-size: 90%; max-width: 80em; margin-bottom: 1.5em; }
details { margin: 0.5em 0 1.5em 0; }
"""


def md_escape(text: object) -> str:
    """Text made safe for one line of Markdown: HTML escaped (renderers pass raw HTML), pipes escaped."""
    return html.escape(str(text), quote=False).replace("|", "\\|").replace("\n", " ")


@dataclass
class Cell:
    """A table cell with emphasis or a colour swatch; a plain ``str`` is a cell too."""

    text: str
    bold: bool = False
    swatch: str | None = None  # "#rrggbb": a colour square before the text (Markdown shows the code)

    def to_html(self) -> str:
        text = html.escape(self.text)
        if self.bold:
            text = f"<b>{text}</b>"
        if self.swatch:
            text = f'<span class="swatch" style="background:{html.escape(self.swatch)}"></span>{text}'
        return text

    def to_markdown(self) -> str:
        text = md_escape(self.text)
        if self.bold and text:
            text = f"**{text}**"
        return f"`{self.swatch}` {text}" if self.swatch else text


def _cell(value: str | Cell) -> Cell:
    return value if isinstance(value, Cell) else Cell(str(value))


@dataclass
class Table:
    """Headers, rows of cells and an optional caption. The first column holds names (left-aligned),
    the others values: right-aligned numbers, or left-aligned text with ``text=True``."""

    headers: list[str]
    rows: list[list[str | Cell]]
    caption: str | None = None
    text: bool = False

    def __post_init__(self) -> None:
        for number, row in enumerate(self.rows):
            if len(row) != len(self.headers):
                raise ValueError(f"table row {number} has {len(row)} cells for {len(self.headers)} headers")

    def to_html(self) -> str:
        def row(tag: str, cells: list[str | Cell]) -> str:
            parts = []
            for index, value in enumerate(cells):
                attribute = ' class="name"' if index == 0 or self.text else ""
                parts.append(f"<{tag}{attribute}>{_cell(value).to_html()}</{tag}>")
            return "<tr>" + "".join(parts) + "</tr>"

        # The caption is a paragraph under the table, not a <caption>: that one wraps to the table's width.
        caption = f'\n<p class="note">{html.escape(self.caption)}</p>' if self.caption else ""
        body = "\n".join(row("td", cells) for cells in self.rows)
        return (f"<table>\n<thead>{row('th', list(self.headers))}</thead>\n<tbody>\n{body}\n</tbody>\n</table>"
                f"{caption}")

    def to_markdown(self) -> str:
        lines = ["| " + " | ".join(md_escape(h) for h in self.headers) + " |",
                 "|" + "|".join([":---"] + [":---" if self.text else "---:"] * (len(self.headers) - 1)) + "|"]
        lines += ["| " + " | ".join(_cell(c).to_markdown() for c in cells) + " |" for cells in self.rows]
        if self.caption:
            lines += ["", f"*{md_escape(self.caption)}*"]
        return "\n".join(lines)


@dataclass
class Heading:
    text: str
    level: int = 2

    def to_html(self) -> str:
        return f"<h{self.level}>{html.escape(self.text)}</h{self.level}>"

    def to_markdown(self) -> str:
        return f"{'#' * self.level} {md_escape(self.text)}"


@dataclass
class Paragraph:
    """A paragraph of text, or of inline parts (plain strings and :class:`Cell` s, e.g. colour swatches)."""

    text: str | list[str | Cell]
    note: bool = False  # smaller grey text (captions, explanations)

    def _parts(self) -> list[Cell]:
        return [_cell(self.text)] if isinstance(self.text, str) else [_cell(part) for part in self.text]

    def to_html(self) -> str:
        attribute = ' class="note"' if self.note else ""
        return f"<p{attribute}>{''.join(part.to_html() for part in self._parts())}</p>"

    def to_markdown(self) -> str:
        return "".join(part.to_markdown() for part in self._parts())


@dataclass
class Figure:
    """A PNG of the report folder, named relative to it."""

    file: str
    alt: str
    caption: str | None = None

    def to_html(self) -> str:
        caption = f"\n<figcaption>{html.escape(self.caption)}</figcaption>" if self.caption else ""
        return f'<figure><img src="{html.escape(self.file)}" alt="{html.escape(self.alt)}">{caption}</figure>'

    def to_markdown(self) -> str:
        caption = f"\n\n*{md_escape(self.caption)}*" if self.caption else ""
        return f"![{md_escape(self.alt)}]({self.file}){caption}"


@dataclass
class Code:
    text: str
    language: str = ""

    def to_html(self) -> str:
        return f"<pre>{html.escape(self.text.rstrip())}</pre>"

    def to_markdown(self) -> str:
        fence = "````" if "```" in self.text else "```"
        return f"{fence}{self.language}\n{self.text.rstrip()}\n{fence}"


@dataclass
class Details:
    """Blocks folded away under a summary line (HTML ``<details>``, no script; Markdown: a bold line)."""

    summary: str
    blocks: list = field(default_factory=list)

    def to_html(self) -> str:
        inner = "\n".join(block.to_html() for block in self.blocks)
        return f"<details>\n<summary>{html.escape(self.summary)}</summary>\n{inner}\n</details>"

    def to_markdown(self) -> str:
        return "\n\n".join([f"**{md_escape(self.summary)}**", *(block.to_markdown() for block in self.blocks)])


Block = Heading | Paragraph | Table | Figure | Code | Details


@dataclass
class Document:
    title: str
    blocks: list[Block] = field(default_factory=list)

    def add(self, *blocks: Block) -> Document:
        self.blocks.extend(blocks)
        return self

    def to_html(self) -> str:
        body = "\n".join([Heading(self.title, 1).to_html(), *(block.to_html() for block in self.blocks)])
        return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
                f"<title>{html.escape(self.title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
                f"{body}\n</body>\n</html>\n")

    def to_markdown(self) -> str:
        return "\n\n".join([Heading(self.title, 1).to_markdown(), *(b.to_markdown() for b in self.blocks)]) + "\n"

    def write(self, out_dir: str | Path) -> Path:
        """Write ``index.html`` and ``report.md`` into ``out_dir`` (atomically); return index.html."""
        out_dir = Path(out_dir)
        index = out_dir / "index.html"
        write_text(out_dir / "report.md", self.to_markdown())
        write_text(index, self.to_html())
        return index
