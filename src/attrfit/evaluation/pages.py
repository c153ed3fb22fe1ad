"""The HTML kit of every page attrfit writes: the run report, the comparison and the label-audit gallery.

Pages are self-contained (images as ``data:`` URIs, styles inline), so one file opens offline in
any browser. Every user string is escaped: text that is already HTML is an :class:`Html`,
anything else goes through :func:`escape` on its way into a page.

Example:
    >>> html_table(["head", "n"], [["a<b", 3]])
    '<table class=""><thead><tr><th>head</th><th>n</th></tr></thead><tbody><tr><td>a&lt;b</td><td>3</td></tr></tbody></table>'
"""

from __future__ import annotations

import base64
import html

from attrfit.core.formatting import number, signed


class Html(str):
    """Text that is already HTML, made by this kit or a page (never user input); the rest is escaped."""


def escape(value) -> str:
    return value if isinstance(value, Html) else html.escape(str(value))


def html_table(header: list[str], rows: list[list], cls: str = "") -> Html:
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in r) + "</tr>" for r in rows)
    return Html(f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>')


def kv_table(pairs: list[tuple[str, object]]) -> Html:
    """A two-column table of names and values."""
    body = "".join(f"<tr><th>{escape(k)}</th><td>{escape(v)}</td></tr>" for k, v in pairs)
    return Html(f'<table class="kv"><tbody>{body}</tbody></table>')


def flagged(text, flag: bool) -> Html:
    """``text`` marked (orange) where a warning applies to it."""
    return Html(f'<span class="flag">{escape(text)}</span>') if flag else Html(escape(text))


def with_ci(x: float, ci: tuple[float, float], sign: bool = False, flag: bool = False) -> Html:
    """A value with its interval in small grey type."""
    fmt = signed if sign else number
    return Html(f'{flagged(fmt(x), flag)} <span class="ci">{escape(fmt(ci[0]))} – {escape(fmt(ci[1]))}</span>')


def png_figure(name: str, caption: str, data: bytes, cls: str = "fig") -> Html:
    """A PNG embedded as a ``data:`` URI, with its caption."""
    uri = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
    return Html(f'<figure class="{cls}"><img src="{uri}" alt="{escape(name)}">'
                f'<figcaption>{escape(caption)}</figcaption></figure>')


def generator(kind: str) -> str:
    """The mark in a page's head that says which attrfit command wrote it."""
    return f'<meta name="generator" content="attrfit {kind}">'


def page(kind: str, title: str, body: str, css: str = "") -> str:
    """A whole page: ``kind`` is the command that writes it ("report", "compare", "audit-labels")."""
    return PAGE.format(generator=generator(kind), title=escape(title), css=CSS + css, body=body)


CSS = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #222;
       max-width: 1250px; margin: 0 auto; padding: 1.2em 2em 4em; }
h1 { margin-bottom: .2em; } h2 { margin-top: 1.8em; border-bottom: 1px solid #ddd; padding-bottom: .2em; }
.sub { color: #555; margin-top: 0; }
table { border-collapse: collapse; margin: .6em 0; }
th, td { border-bottom: 1px solid #e4e4e4; padding: .3em .7em; text-align: left; vertical-align: top; }
thead th { background: #f4f4f4; font-weight: 600; }
table.metrics td { white-space: nowrap; font-variant-numeric: tabular-nums; }
table.kv th { font-weight: 600; background: none; width: 16em; }
.ci { color: #777; font-size: .85em; }
.note { color: #555; font-size: .92em; max-width: 60em; }
figure { margin: 1em 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { color: #555; font-size: .9em; max-width: 60em; }
.flag { background: #ffe0b0; padding: 0 .25em; border-radius: 3px; }
"""

PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
{generator}
<title>{title}</title><style>{css}</style></head>
<body>
<h1>{title}</h1>
{body}
</body></html>
"""
