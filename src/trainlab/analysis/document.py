"""A report as a list of blocks, rendered to GitHub-flavoured Markdown or one HTML page.

Building the content once and rendering it twice keeps the two formats identical in substance:
the Markdown links its PNG figures beside it, the HTML embeds them (base64), so the page is a
single self-contained file that can be mailed or attached.
"""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Heading:
    text: str
    level: int = 2


@dataclass
class Paragraph:
    text: str  # may use `code` and **bold**


@dataclass
class Note:
    text: str
    kind: str = "warning"  # warning | info


@dataclass
class Bullets:
    items: list[str]


@dataclass
class Table:
    headers: list[str]
    rows: list[list[str]]
    numeric: list[bool] = field(default_factory=list)  # right-align these columns


@dataclass
class Figure:
    path: Path
    caption: str


@dataclass
class Code:
    text: str


@dataclass
class Markdown:
    """Prose already in Markdown (paragraphs, ``-`` and ``1.`` lists, bold, italics, code)."""

    text: str


Block = Heading | Paragraph | Note | Bullets | Table | Figure | Code | Markdown


@dataclass
class Document:
    title: str
    blocks: list[Block] = field(default_factory=list)

    def add(self, *blocks: Block) -> None:
        self.blocks.extend(blocks)


# -- Markdown ----------------------------------------------------------------------------------


_CODE_SPAN = re.compile(r"(`[^`]*`)")
_TAG_START = re.compile(r"<(?=[A-Za-z/!?])")


def _md_text(text: str) -> str:
    """``text`` with what GitHub would take for HTML (``<b>``, ``<!--``) made literal: names
    from users' files (a data set, a class) reach the prose and tables. ``p < 0.05`` stays as
    written, and a `code span` shows its text as is, so neither is touched."""
    parts = _CODE_SPAN.split(text)
    return "".join(part if index % 2 else _TAG_START.sub("&lt;", part)
                   for index, part in enumerate(parts))  # fmt: skip


def _md_cell(text: str) -> str:
    return _md_text(text).replace("|", "\\|").replace("\n", " ")


def markdown_table(table: Table) -> str:
    numeric = table.numeric or [False] * len(table.headers)
    lines = ["| " + " | ".join(_md_cell(h) for h in table.headers) + " |",
             "|" + "|".join("---:" if right else "---" for right in numeric) + "|"]  # fmt: skip
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in table.rows]
    return "\n".join(lines)


def render_markdown(document: Document, folder: Path) -> str:
    """Markdown for GitHub; figure paths are written relative to ``folder`` (the report's)."""
    parts = [f"# {_md_text(document.title)}"]
    for block in document.blocks:
        if isinstance(block, Heading):
            parts.append("#" * block.level + " " + _md_text(block.text))
        elif isinstance(block, Paragraph):
            parts.append(_md_text(block.text))
        elif isinstance(block, Note):
            label = "Warning" if block.kind == "warning" else "Note"
            parts.append(f"> **{label}:** {_md_text(block.text)}")
        elif isinstance(block, Bullets):
            parts.append("\n".join(f"- {_md_text(item)}" for item in block.items))
        elif isinstance(block, Table):
            parts.append(markdown_table(block))
        elif isinstance(block, Figure):
            relative = Path(block.path).resolve().relative_to(folder.resolve()).as_posix()
            caption = _md_text(block.caption)
            parts.append(f"![{caption}]({relative})\n\n*{caption}*")
        elif isinstance(block, Code):
            parts.append(f"```\n{block.text}\n```")
        elif isinstance(block, Markdown):
            parts.append(_md_text(block.text.strip()))
    return "\n\n".join(parts) + "\n"


# -- HTML --------------------------------------------------------------------------------------

STYLE = """
body{font:15px/1.5 -apple-system,system-ui,"Segoe UI",Roboto,sans-serif;max-width:1100px;
margin:2em auto;padding:0 1em;color:#1f2328}
h1{border-bottom:1px solid #d1d9e0;padding-bottom:.3em}h2{margin-top:1.8em;border-bottom:1px solid
#eaeef2;padding-bottom:.2em}table{border-collapse:collapse;margin:1em 0;font-size:13px;display:block;
overflow-x:auto}th,td{border:1px solid #d1d9e0;padding:4px 9px;white-space:nowrap}th{background:#f6f8fa}
tr:nth-child(even) td{background:#fbfcfd}td.num{text-align:right;font-variant-numeric:tabular-nums}
figure{margin:1.2em 0}figure img{max-width:100%;height:auto;border:1px solid #eaeef2}
figcaption{color:#59636e;font-size:13px}code,pre{background:#f6f8fa;border-radius:4px;
font:13px ui-monospace,SFMono-Regular,Menlo,monospace}code{padding:.1em .3em}pre{padding:.8em;
overflow-x:auto}.note{border-left:4px solid #0969da;padding:.4em 1em;background:#f6f8fa}
.warning{border-left-color:#bf8700;background:#fff8c5}
"""


def _inline(text: str) -> str:
    escaped = html.escape(text)
    escaped = re.sub(r"`([^`]+)`", r"<code>\1</code>", escaped)
    escaped = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", escaped)  # a name may hold a *
    return re.sub(r"(?<![*\w])\*([^*\s][^*]*)\*(?![*\w])", r"<em>\1</em>", escaped)


_LIST_ITEM = re.compile(r"^(-|\d+\.)\s+")


def markdown_to_html(text: str) -> str:
    """The small Markdown subset our prose uses: paragraphs, ``-``/``1.`` lists (continuation
    lines indented), and inline code, bold and italics."""
    out = []
    for chunk in re.split(r"\n\s*\n", text.strip()):
        lines = chunk.splitlines()
        if not _LIST_ITEM.match(lines[0]):
            out.append(f"<p>{_inline(' '.join(line.strip() for line in lines))}</p>")
            continue
        tag = "ol" if lines[0][0].isdigit() else "ul"
        items: list[str] = []
        for line in lines:
            if _LIST_ITEM.match(line):
                items.append(_LIST_ITEM.sub("", line).strip())
            elif items:
                items[-1] += " " + line.strip()
        out.append(f"<{tag}>" + "".join(f"<li>{_inline(i)}</li>" for i in items) + f"</{tag}>")
    return "\n".join(out)


def _image_data(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def html_table(table: Table) -> str:
    numeric = table.numeric or [False] * len(table.headers)
    head = "".join(f"<th>{_inline(h)}</th>" for h in table.headers)
    body = "".join(
        "<tr>" + "".join(f'<td{" class=num" if right else ""}>{_inline(c)}</td>'
                         for c, right in zip(row, numeric, strict=False)) + "</tr>"
        for row in table.rows
    )  # fmt: skip
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def render_html(document: Document) -> str:
    """One self-contained page: styles inline, figures embedded as data URIs."""
    parts = [f"<h1>{_inline(document.title)}</h1>"]
    for block in document.blocks:
        if isinstance(block, Heading):
            level = min(max(block.level, 2), 6)
            parts.append(f"<h{level}>{_inline(block.text)}</h{level}>")
        elif isinstance(block, Paragraph):
            parts.append(f"<p>{_inline(block.text)}</p>")
        elif isinstance(block, Note):
            parts.append(f'<p class="note {block.kind}">{_inline(block.text)}</p>')
        elif isinstance(block, Bullets):
            parts.append("<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in block.items) + "</ul>")
        elif isinstance(block, Table):
            parts.append(html_table(block))
        elif isinstance(block, Figure):
            caption = _inline(block.caption)
            parts.append(f'<figure><img src="{_image_data(block.path)}" alt="{html.escape(block.caption)}">'
                         f"<figcaption>{caption}</figcaption></figure>")  # fmt: skip
        elif isinstance(block, Code):
            parts.append(f"<pre>{html.escape(block.text)}</pre>")
        elif isinstance(block, Markdown):
            parts.append(markdown_to_html(block.text))
    title = html.escape(document.title)
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{title}</title><style>{STYLE}</style></head>\n<body>\n"
        + "\n".join(parts)
        + "\n</body></html>\n"
    )


def table_csv(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    import csv
    import io

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(headers)
    writer.writerows(rows)
    return buffer.getvalue()
