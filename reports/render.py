"""Markdown and self-contained HTML from one list of document blocks.

The report is assembled once as blocks (headings, paragraphs, tables, figures, lists); the two
renderers only decide the syntax, so `report.md` and `report.html` always say the same thing.
Markdown links figures as PNG files next to it (GitHub renders them); the HTML embeds every
figure as a base64 PNG so the single file can be mailed or attached to a CI run.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass, field
from html import escape
from pathlib import Path


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


@dataclass(frozen=True)
class Heading:
    level: int
    text: str

    def md(self, base: Path) -> str:
        return f"{'#' * self.level} {self.text}"

    def html(self) -> str:
        return f"<h{self.level}>{escape(self.text)}</h{self.level}>"


@dataclass(frozen=True)
class Para:
    text: str
    emphasis: bool = False  # rendered in italics (captions, warnings)

    def md(self, base: Path) -> str:
        return f"*{self.text}*" if self.emphasis else self.text

    def html(self) -> str:
        css = ' class="em"' if self.emphasis else ""
        return f"<p{css}>{escape(self.text)}</p>"


@dataclass(frozen=True)
class Bullets:
    items: tuple[str, ...]

    def md(self, base: Path) -> str:
        return "\n".join(f"- {item}" for item in self.items)

    def html(self) -> str:
        return "<ul>" + "".join(f"<li>{escape(item)}</li>" for item in self.items) + "</ul>"


@dataclass(frozen=True)
class Table:
    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    strong: frozenset[int] = field(default_factory=frozenset)  # rows shown in bold (best)
    numeric: frozenset[int] = field(default_factory=frozenset)  # right-aligned number columns

    def md(self, base: Path) -> str:
        align = ["---:" if i in self.numeric else "---" for i in range(len(self.header))]
        lines = [
            "| " + " | ".join(_md_escape(h) for h in self.header) + " |",
            "| " + " | ".join(align) + " |",
        ]
        for i, row in enumerate(self.rows):
            cells = [_md_escape(c) for c in row]
            if i in self.strong:
                cells = [f"**{c}**" if c else c for c in cells]
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines)

    def html(self) -> str:
        head = "".join(f"<th>{escape(h)}</th>" for h in self.header)
        body = []
        for i, row in enumerate(self.rows):
            cells = "".join(
                f'<td class="num">{escape(c)}</td>'
                if j in self.numeric
                else f"<td>{escape(c)}</td>"
                for j, c in enumerate(row)
            )
            body.append(
                f'<tr class="best">{cells}</tr>' if i in self.strong else f"<tr>{cells}</tr>"
            )
        return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


@dataclass(frozen=True)
class FigureBlock:
    png: Path  # absolute path of the PNG
    svg: Path
    alt: str
    caption: str

    def md(self, base: Path) -> str:
        png, svg = self.png.relative_to(base).as_posix(), self.svg.relative_to(base).as_posix()
        return f"![{self.alt}]({png})\n\n*{self.caption}* ([SVG]({svg}))"

    def html(self) -> str:
        data = base64.b64encode(self.png.read_bytes()).decode("ascii")
        return (
            f'<figure><img alt="{escape(self.alt)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{escape(self.caption)}</figcaption></figure>"
        )


Block = Heading | Para | Bullets | Table | FigureBlock


def markdown(blocks: Sequence[Block], base: Path) -> str:
    return "\n\n".join(b.md(base) for b in blocks) + "\n"


CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2rem auto;
max-width:1200px;padding:0 1rem;color:#1b1b1b;line-height:1.45}
h1{border-bottom:2px solid #ddd;padding-bottom:.3rem}h2{margin-top:2.2rem;border-bottom:1px solid #eee}
table{border-collapse:collapse;margin:1rem 0;font-size:.88rem;display:block;overflow-x:auto}
th,td{border:1px solid #d0d7de;padding:.3rem .55rem;vertical-align:top}
th{background:#f6f8fa;text-align:left}td.num{text-align:right;font-variant-numeric:tabular-nums}
tr.best td{background:#fff8c5;font-weight:600}
figure{margin:1.2rem 0}figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{font-size:.85rem;color:#555;font-style:italic}.em{font-style:italic;color:#555}
"""


def html_page(blocks: Sequence[Block], title: str) -> str:
    body = "\n".join(b.html() for b in blocks)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title><style>{CSS}</style></head>\n"
        f"<body>\n{body}\n</body></html>\n"
    )
