"""A tiny document model rendered two ways: a self-contained HTML page and Markdown.

The report is built once as a list of blocks; `to_html` embeds figures as base64 PNG with inline
CSS (no external assets, so the file can be mailed or archived alone), `to_markdown` links the
same figures as files next to it.
"""

from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass, field
from typing import Union


@dataclass
class Heading:
    text: str
    level: int = 2
    anchor: str | None = None


@dataclass
class Para:
    text: str  # plain text; `code` spans in backticks are rendered as code


@dataclass
class Note:
    text: str
    kind: str = "warn"  # "warn" | "info" | "ok" | "bad"


@dataclass
class Bullets:
    items: list[str]


@dataclass
class Table:
    columns: list[str]
    rows: list[list[str]]
    numeric: list[bool] | None = None  # right-align these columns
    caption: str | None = None
    row_class: list[str] | None = None  # per-row CSS class (HTML only), e.g. "bad"


@dataclass
class Figure:
    key: str
    title: str
    png: bytes
    relpath: str  # for Markdown, relative to the report
    caption: str = ""


@dataclass
class Code:
    text: str
    lang: str = ""


@dataclass
class Details:
    """Collapsible in HTML; a plain subsection in Markdown."""

    summary: str
    blocks: list = field(default_factory=list)
    level: int = 3


Block = Union[Heading, Para, Note, Bullets, Table, Figure, Code, Details]

CSS = """
body{font:15px/1.5 -apple-system,BlinkMacSystemFont,"Segoe UI",Helvetica,Arial,sans-serif;color:#1d232b;
 max-width:1120px;margin:0 auto;padding:24px 28px 80px;background:#fff}
h1{font-size:26px;margin:0 0 4px}h2{font-size:20px;margin:38px 0 10px;padding-bottom:4px;border-bottom:1px solid #e3e6ea}
h3{font-size:16px;margin:22px 0 8px}h4{font-size:14px;margin:16px 0 6px}
p{margin:8px 0}code{font:13px/1.4 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;background:#f3f4f6;
 padding:1px 4px;border-radius:4px}
pre{background:#f6f8fa;border:1px solid #e3e6ea;border-radius:6px;padding:10px 12px;overflow:auto;font-size:12.5px}
pre code{background:none;padding:0}
.note{border-left:4px solid #d9a400;background:#fff8e1;padding:8px 12px;margin:10px 0;border-radius:0 6px 6px 0}
.note.info{border-color:#2f80ed;background:#eef5ff}.note.ok{border-color:#2e9d4f;background:#ecf8f0}
.note.bad{border-color:#d64545;background:#fdeeee}
.tablewrap{overflow-x:auto;margin:10px 0}
table{border-collapse:collapse;font-size:13px;min-width:40%}
th,td{padding:4px 9px;border-bottom:1px solid #e8eaee;text-align:left;white-space:nowrap}
th{background:#f6f8fa;font-weight:600;border-bottom:2px solid #d8dce2}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
tr.bad td{background:#fdf1f1}tr.ok td{background:#f1faf4}tr.muted td{color:#8a929c}
caption{caption-side:bottom;text-align:left;color:#5b6470;font-size:12.5px;padding-top:4px}
figure{margin:14px 0 22px}figure img{max-width:100%;height:auto;border:1px solid #eef0f3;border-radius:6px}
figcaption{color:#5b6470;font-size:13px;margin-top:4px}
details{border:1px solid #e3e6ea;border-radius:6px;padding:6px 12px;margin:8px 0}
details>summary{cursor:pointer;font-weight:600}
.meta{color:#5b6470;font-size:13px}
nav ul{columns:2;margin:6px 0;padding-left:20px}
ul{margin:6px 0;padding-left:22px}
"""


_LINK = re.compile(r"\[([^\]]+)\]\((#[\w-]+)\)")


def _inline_html(text: str) -> str:
    """Escape, then render the report's only inline markup: `code`, **bold** and [text](#anchor)."""
    parts = str(text).split("`")
    out = []
    for i, p in enumerate(parts):
        if i % 2:
            out.append(f"<code>{html.escape(p)}</code>")
        else:
            e = _LINK.sub(r'<a href="\2">\1</a>', html.escape(p))
            bits = e.split("**")
            out.append("".join(f"<strong>{b}</strong>" if j % 2 else b for j, b in enumerate(bits)))
    return "".join(out)


def _block_html(b: Block) -> str:
    if isinstance(b, Heading):
        anchor = f' id="{html.escape(b.anchor)}"' if b.anchor else ""
        return f"<h{b.level}{anchor}>{_inline_html(b.text)}</h{b.level}>"
    if isinstance(b, Para):
        return f"<p>{_inline_html(b.text)}</p>"
    if isinstance(b, Note):
        return f'<div class="note {html.escape(b.kind)}">{_inline_html(b.text)}</div>'
    if isinstance(b, Bullets):
        return "<ul>" + "".join(f"<li>{_inline_html(i)}</li>" for i in b.items) + "</ul>"
    if isinstance(b, Table):
        num = b.numeric or [False] * len(b.columns)
        head = "".join(f'<th class="num">{_inline_html(c)}</th>' if n else f"<th>{_inline_html(c)}</th>"
                       for c, n in zip(b.columns, num))
        body = []
        for i, row in enumerate(b.rows):
            cls = f' class="{html.escape(b.row_class[i])}"' if b.row_class and b.row_class[i] else ""
            cells = "".join(f'<td class="num">{_inline_html(c)}</td>' if n else f"<td>{_inline_html(c)}</td>"
                            for c, n in zip(row, num))
            body.append(f"<tr{cls}>{cells}</tr>")
        cap = f"<caption>{_inline_html(b.caption)}</caption>" if b.caption else ""
        thead = f"<thead><tr>{head}</tr></thead>" if any(b.columns) else ""  # key/value tables have no header
        return f'<div class="tablewrap"><table>{cap}{thead}<tbody>{"".join(body)}</tbody></table></div>'

    if isinstance(b, Figure):
        data = base64.b64encode(b.png).decode("ascii")
        cap = f"<figcaption>{_inline_html(b.caption)}</figcaption>" if b.caption else ""
        return (f'<figure id="fig-{html.escape(b.key)}"><img alt="{html.escape(b.title)}" '
                f'src="data:image/png;base64,{data}">{cap}</figure>')
    if isinstance(b, Code):
        return f"<pre><code>{html.escape(b.text)}</code></pre>"
    if isinstance(b, Details):
        inner = "\n".join(_block_html(x) for x in b.blocks)
        return f"<details><summary>{_inline_html(b.summary)}</summary>\n{inner}\n</details>"
    raise TypeError(f"unknown block {type(b).__name__}")


def to_html(title: str, blocks: list[Block]) -> str:
    body = "\n".join(_block_html(b) for b in blocks)
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<title>{html.escape(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n")


def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _md_emph(text: str) -> str:
    """Caption text inside *…*: literal asterisks (L*, D*) must not end the emphasis."""
    return str(text).replace("*", "\\*")


def _block_md(b: Block) -> str:
    if isinstance(b, Heading):
        return f"{'#' * b.level} {b.text}"
    if isinstance(b, Para):
        return b.text
    if isinstance(b, Note):
        icon = {"warn": "⚠️", "info": "ℹ️", "ok": "✅", "bad": "❌"}.get(b.kind, "")
        return f"> {icon} {b.text}".replace("\n", "\n> ")
    if isinstance(b, Bullets):
        return "\n".join(f"- {i}" for i in b.items)
    if isinstance(b, Table):
        num = b.numeric or [False] * len(b.columns)
        lines = ["| " + " | ".join(_md_cell(c) for c in b.columns) + " |",
                 "|" + "|".join("---:" if n else "---" for n in num) + "|"]
        lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in b.rows]
        if b.caption:
            lines += ["", f"*{_md_emph(b.caption)}*"]
        return "\n".join(lines)
    if isinstance(b, Figure):
        out = f"![{b.title}]({b.relpath})"
        return out + (f"\n\n*{_md_emph(b.caption)}*" if b.caption else "")
    if isinstance(b, Code):
        return f"```{b.lang}\n{b.text.rstrip()}\n```"
    if isinstance(b, Details):
        inner = "\n\n".join(_block_md(x) for x in b.blocks)
        return f"{'#' * b.level} {b.summary}\n\n{inner}"
    raise TypeError(f"unknown block {type(b).__name__}")


def _slug(text: str) -> str:
    """GitHub's heading anchor: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")


def to_markdown(blocks: list[Block]) -> str:
    text = "\n\n".join(_block_md(b) for b in blocks) + "\n"
    # In-page links point at our anchors; Markdown viewers anchor headings by their text.
    slugs = {b.anchor: _slug(b.text) for b in blocks if isinstance(b, Heading) and b.anchor}
    return _LINK.sub(lambda m: f"[{m.group(1)}](#{slugs.get(m.group(2)[1:], m.group(2)[1:])})", text)
