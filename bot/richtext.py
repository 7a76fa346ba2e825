"""Markdown bodies rendered to sanitised HTML: links, emphasis, lists and code; no script, no
remote content."""

from __future__ import annotations

import html

import nh3
from markdown_it import MarkdownIt

_MD = MarkdownIt("commonmark", {"html": False, "breaks": True, "linkify": False}).enable(
    ["strikethrough", "table"]
)
_TAGS = {
    "p", "br", "hr", "em", "strong", "s", "del", "code", "pre", "blockquote",
    "ul", "ol", "li", "a", "h1", "h2", "h3", "h4", "h5", "h6",
    "table", "thead", "tbody", "tr", "th", "td",
}  # fmt: skip


def markdown_html(text: str, signature: str = "") -> str:
    """Render ``text`` as markdown into a small, sanitised HTML document, ending with
    ``signature`` as plain text after the "-- " separator."""
    body = nh3.clean(
        _MD.render(text),
        tags=_TAGS,
        attributes={"a": {"href", "title"}, "ol": {"start"}},
        url_schemes={"http", "https", "mailto"},
        link_rel="noopener noreferrer",
        strip_comments=True,
    )
    if signature:
        lines = "<br>\n".join(html.escape(line) for line in signature.split("\n"))
        body += f'<p class="signature">-- <br>\n{lines}</p>'
    return f'<!doctype html><html><head><meta charset="utf-8"></head><body>{body}</body></html>'
