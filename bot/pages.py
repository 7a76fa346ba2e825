"""The few HTML pages people see: small, plain, escaped, and saying what to do next."""

from __future__ import annotations

from html import escape

_STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:34rem;margin:3rem auto;padding:0 1rem;"
    "line-height:1.5;color:#1d1d1f}h1{font-size:1.4rem}"
    "button{font-size:1rem;padding:.6rem 1.2rem;border-radius:.4rem;border:1px solid #0b57d0;"
    "background:#0b57d0;color:#fff;cursor:pointer}.muted{color:#666;font-size:.9rem}"
)


def page(title: str, *paragraphs: str, form_action: str | None = None, button: str = "") -> str:
    """Return a complete page; every text is escaped here, so callers pass plain text."""
    body = "".join(f"<p>{escape(p)}</p>" for p in paragraphs)
    if form_action is not None:
        body += (
            f'<form method="post" action="{escape(form_action)}">'
            f'<button type="submit">{escape(button)}</button></form>'
        )
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)} - mailbridge</title><style>{_STYLE}</style></head>"
        f"<body><h1>{escape(title)}</h1>{body}"
        '<p class="muted">mailbridge sends email from your own Gmail when you ask it to in chat. '
        "It never sees your Google password.</p></body></html>"
    )
