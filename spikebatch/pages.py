"""Small HTML building blocks for spikebatch's self-contained pages (run page, array summary).

Pure Python (the run-record Lambda renders the array summary): no template engine, no
external resource, and no JavaScript but :data:`TABLE_SCRIPT`, a small inline script that
sorts and pages the big tables that ask for it; without it they show whole. Every value goes
through :func:`esc` unless it is a :class:`Raw` fragment built here, so text from run.json
or a request cannot inject markup.
"""

from __future__ import annotations

import base64
import functools
import html
import math
from collections.abc import Iterable, Sequence
from typing import Any

CSS = """
:root { --fg:#1f2328; --muted:#59636e; --line:#d1d9e0; --bg:#ffffff; --panel:#f6f8fa;
  --good:#1a7f37; --mua:#9a6700; --noise:#8c959f; --bad:#cf222e; --run:#0969da; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.5 -apple-system, "Segoe UI", Helvetica, Arial, sans-serif;
  color: var(--fg); background: var(--bg); }
main { max-width: 1240px; margin: 0 auto; padding: 24px 28px 48px; }
header { border-bottom: 1px solid var(--line); padding-bottom: 12px; margin-bottom: 20px; }
h1 { font-size: 22px; margin: 0 0 4px; word-break: break-all; }
h2 { font-size: 17px; margin: 28px 0 10px; padding-bottom: 4px; border-bottom: 1px solid var(--line); }
h3 { font-size: 15px; margin: 18px 0 8px; }
.sub { color: var(--muted); }
.cards { display: grid; grid-template-columns: repeat(auto-fit, minmax(200px, 1fr)); gap: 12px; }
.card { background: var(--panel); border: 1px solid var(--line); border-radius: 8px; padding: 10px 14px; }
.card .k { color: var(--muted); font-size: 12px; text-transform: uppercase; letter-spacing: .04em; }
.card .v { font-size: 20px; font-weight: 600; }
.card .d { color: var(--muted); font-size: 12px; }
table { border-collapse: collapse; width: 100%; margin: 6px 0 10px; }
th, td { text-align: left; padding: 4px 8px; border-bottom: 1px solid var(--line); vertical-align: top; }
th { background: var(--panel); font-weight: 600; white-space: nowrap; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tbody tr:nth-child(even) { background: #fbfcfd; }
.wide { overflow-x: auto; }
dl { display: grid; grid-template-columns: max-content 1fr; gap: 3px 16px; margin: 6px 0; }
dt { color: var(--muted); }
dd { margin: 0; word-break: break-all; }
code, pre { font: 12.5px/1.45 ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; }
pre { background: var(--panel); border: 1px solid var(--line); border-radius: 6px; padding: 10px;
  overflow-x: auto; white-space: pre-wrap; }
.badge { display: inline-block; padding: 0 8px; border-radius: 10px; font-size: 12px; font-weight: 600;
  color: #fff; background: var(--muted); white-space: nowrap; }
.badge.good, .badge.succeeded, .badge.published, .badge.unchanged, .badge.replaced { background: var(--good); }
.badge.mua { background: var(--mua); }
.badge.noise { background: var(--noise); }
.badge.failed { background: var(--bad); }
.badge.running, .badge.submitted, .badge.runnable, .badge.starting, .badge.pending { background: var(--run); }
.alert { border: 1px solid var(--bad); background: #fff5f5; border-radius: 8px; padding: 10px 14px; }
.note { border: 1px solid var(--line); background: var(--panel); border-radius: 8px; padding: 10px 14px; }
.bar { background: #dbe4ee; border-radius: 3px; height: 10px; min-width: 120px; }
.bar > span { display: block; height: 10px; border-radius: 3px; background: var(--run); }
figure { margin: 12px 0 24px; }
figure img { max-width: 100%; border: 1px solid var(--line); border-radius: 6px; }
figcaption { color: var(--muted); font-size: 13px; margin-top: 4px; }
footer { margin-top: 36px; color: var(--muted); font-size: 12px; }
a { color: var(--run); }
.pager { display: flex; flex-wrap: wrap; align-items: center; gap: 6px 10px; margin: 8px 0 2px; }
.pager button, .pager select { font: inherit; padding: 1px 8px; }
th button { all: unset; cursor: pointer; }
th[aria-sort=ascending] button::after { content: " \\25B2"; }
th[aria-sort=descending] button::after { content: " \\25BC"; }
@media print { .pager { display: none; } tr[hidden] { display: table-row; } }
"""

#: Sorts and pages every ``<table data-page-size=N>`` (see :func:`table`): a click on a
#: header sorts by that column (numbers as numbers, a blank last), page controls show N rows
#: at a time (or all), and a ``data-filter-column`` picks the rows by that column's value.
#: It only hides rows: every row stays in the HTML, for the browser's find, for print (the
#: CSS shows them all) and for a reader without JavaScript, who gets the whole table.
TABLE_SCRIPT = """
(() => {
  "use strict";
  const blank = (text) => text === "" || text === "\u2014";
  const text = (row, col) => row.cells[col].textContent.trim();
  function compare(a, b, numeric) {
    if (blank(a) || blank(b)) return blank(a) - blank(b);
    return numeric ? Number(a) - Number(b) : a.localeCompare(b, undefined, {numeric: true});
  }
  function control(tag, label, props) {
    const el = Object.assign(document.createElement(tag), props);
    if (label) el.setAttribute("aria-label", label);
    return el;
  }
  function options(select, pairs) {
    for (const [value, label] of pairs) select.add(new Option(label, value));
  }
  function enhance(table) {
    const body = table.tBodies[0];
    const heads = Array.from(table.tHead.rows[0].cells);
    const rows = Array.from(body.rows);
    const by = Number(table.dataset.filterColumn);
    const state = {size: Number(table.dataset.pageSize), page: 0, shown: rows};
    const bar = control("div", "table pages", {className: "pager"});
    const filter = control("select", "show the rows with", {});
    const counts = new Map();
    if (table.dataset.filterColumn) rows.forEach((r) => {
      counts.set(text(r, by), (counts.get(text(r, by)) || 0) + 1);
    });
    options(filter, [["", "all (" + rows.length + ")"],
      ...Array.from(counts, ([v, n]) => [v, v + " (" + n + ")"])]);
    const size = control("select", "rows per page", {});
    options(size, [[state.size, state.size + " per page"], [2 * state.size,
      2 * state.size + " per page"], [0, "all rows"]]);
    const buttons = {};
    for (const [name, label] of [["first", "\u00ab"], ["prev", "\u2039 previous"],
                                 ["next", "next \u203a"], ["last", "\u00bb"]]) {
      buttons[name] = control("button", name + " page", {type: "button", textContent: label});
      buttons[name].dataset.page = name;
    }
    const status = control("span", null, {className: "sub"});
    status.setAttribute("aria-live", "polite");
    bar.append(...(counts.size ? [filter] : []), buttons.first, buttons.prev, status,
               buttons.next, buttons.last, size);
    table.parentNode.before(bar);
    function pages() {
      return state.size ? Math.max(1, Math.ceil(state.shown.length / state.size)) : 1;
    }
    function show(page) {
      state.page = Math.min(Math.max(0, page), pages() - 1);
      const from = state.size ? state.page * state.size : 0;
      const to = state.size ? from + state.size : state.shown.length;
      const visible = new Set(state.shown.slice(from, to));
      rows.forEach((r) => { r.hidden = !visible.has(r); });
      const n = state.shown.length;
      status.textContent = "page " + (state.page + 1) + " of " + pages() + " \u00b7 rows " +
        (n ? from + 1 : 0) + "\u2013" + Math.min(to, n) + " of " + n;
      buttons.first.disabled = buttons.prev.disabled = state.page === 0;
      buttons.next.disabled = buttons.last.disabled = state.page === pages() - 1;
    }
    buttons.first.onclick = () => show(0);
    buttons.prev.onclick = () => show(state.page - 1);
    buttons.next.onclick = () => show(state.page + 1);
    buttons.last.onclick = () => show(pages() - 1);
    size.onchange = () => { state.size = Number(size.value); show(0); };
    filter.onchange = () => {
      state.shown = rows.filter((r) => !filter.value || text(r, by) === filter.value);
      show(0);
    };
    heads.forEach((th, col) => {
      const numeric = rows.every((r) => blank(text(r, col)) || !isNaN(Number(text(r, col))));
      const button = control("button", null, {type: "button", title: "sort by this column"});
      button.append(...th.childNodes);
      th.append(button);
      button.onclick = () => {
        const first = numeric ? "descending" : "ascending";
        const other = first === "ascending" ? "descending" : "ascending";
        const order = th.getAttribute("aria-sort") === first ? other : first;
        heads.forEach((h) => h.removeAttribute("aria-sort"));
        th.setAttribute("aria-sort", order);
        const sign = order === "ascending" ? 1 : -1;
        rows.sort((a, b) => {
          const x = text(a, col), y = text(b, col);
          return blank(x) || blank(y) ? compare(x, y) : sign * compare(x, y, numeric);
        });
        body.append(...rows);
        filter.onchange();
      };
    });
    show(0);
  }
  document.querySelectorAll("table[data-page-size]").forEach(enhance);
})();
"""


class Raw(str):
    """HTML that is already safe (built by this module); :func:`esc` leaves it as is."""


def esc(value: Any) -> Raw:
    """Escape any value for HTML text or attributes; None and NaN show as an em dash."""
    if isinstance(value, Raw):
        return value
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return Raw("&mdash;")
    return Raw(html.escape(str(value), quote=True))


def join(parts: Iterable[Any]) -> Raw:
    return Raw("".join([esc(p) for p in parts]))


@functools.cache
def _attribute(keyword: str) -> str:
    return keyword.rstrip("_").replace("_", "-")


def tag(name: str, content: Any = "", **attrs: Any) -> Raw:
    """``<name attrs>content</name>``; ``class_`` sets ``class``; None attributes are dropped.
    (A campaign's runs pages call it some 100,000 times: no work for absent attributes.)"""
    rendered = "".join([f' {_attribute(k)}="{esc(v)}"' for k, v in attrs.items() if v is not None])
    return Raw(f"<{name}{rendered}>{esc(content)}</{name}>")


def link(href: str, text: Any) -> Raw:
    """A link; only relative, ``http(s):`` and ``file:`` targets (never ``javascript:``)."""
    scheme = href.split(":", 1)[0].lower() if ":" in href.split("/", 1)[0] else ""
    if scheme not in ("", "http", "https", "file"):
        return esc(text)
    return tag("a", text, href=href)


def badge(text: Any, kind: str | None = None) -> Raw:
    """A coloured label: good / mua / noise, succeeded / failed / running, ..."""
    css = (kind or str(text)).lower()
    return tag("span", text, class_=f"badge {css}")


def dl(pairs: Iterable[tuple[str, Any]]) -> Raw:
    """A definition list of (label, value); pairs whose value is None are left out."""
    items = "".join(f"{tag('dt', k)}{tag('dd', v)}" for k, v in pairs if v is not None)
    return tag("dl", Raw(items))


def table(
    headers: Sequence[str],
    rows: Iterable[Sequence[Any]],
    *,
    numeric: Iterable[int] = (),
    caption: str | None = None,
    page_size: int | None = None,
    filter_column: int | None = None,
) -> Raw:
    """A table; columns whose index is in ``numeric`` are right-aligned.

    ``page_size``: a page with :data:`TABLE_SCRIPT` makes it sortable and shows that many
    rows at a time (with a filter on the values of ``filter_column``); all rows stay in it.
    """
    numeric = set(numeric)

    def cells(values: Sequence[Any], cell: str) -> Raw:
        return join(
            tag(cell, v, class_="num" if i in numeric else None) for i, v in enumerate(values)
        )

    head = tag("thead", tag("tr", cells(headers, "th")))
    body = tag("tbody", join(tag("tr", cells(r, "td")) for r in rows))
    cap = tag("caption", caption) if caption else Raw("")
    return tag(
        "div",
        tag(
            "table",
            join([cap, head, body]),
            data_page_size=page_size,
            data_filter_column=filter_column if page_size else None,
        ),
        class_="wide",
    )


def card(key: str, value: Any, detail: Any = None) -> Raw:
    parts = [tag("div", key, class_="k"), tag("div", value, class_="v")]
    if detail is not None:
        parts.append(tag("div", detail, class_="d"))
    return tag("div", join(parts), class_="card")


def bar(fraction: float) -> Raw:
    """A horizontal bar filled to ``fraction`` (0..1): relative stage times at a glance."""
    width = max(0.0, min(1.0, fraction if math.isfinite(fraction) else 0.0)) * 100
    return tag("div", tag("span", "", style=f"width:{width:.1f}%"), class_="bar")


def figure(png: bytes, caption: Any, *, alt: str = "figure") -> Raw:
    """A PNG embedded as a data URL (the page stays one self-contained file), captioned."""
    src = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
    return tag(
        "figure",
        join([Raw(f'<img src="{esc(src)}" alt="{esc(alt)}">'), tag("figcaption", caption)]),
    )


def section(title: str, body: Any, *, id: str | None = None) -> Raw:
    return join([tag("h2", title, id=id), body])


def page(
    title: str, body: Any, *, heading: Any = None, subtitle: Any = None, script: str = ""
) -> str:
    """A whole HTML document: inline CSS, nothing fetched from the network.

    ``script``: inline JavaScript run once the body is parsed (a constant of this module,
    such as :data:`TABLE_SCRIPT`: never text from a record)."""
    header = join(
        [tag("h1", heading if heading is not None else title)]
        + ([tag("div", subtitle, class_="sub")] if subtitle is not None else [])
    )
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title><style>{CSS}</style></head>"
        f"<body><main>{tag('header', header)}{esc(body)}"
        f"{tag('footer', 'Written by spikebatch. Self-contained: opens offline.')}"
        f"</main>{f'<script>{script}</script>' if script else ''}</body></html>\n"
    )


# -- numbers as people read them ----------------------------------------------------------


def _finite(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def fmt_seconds(value: Any) -> str | None:
    """``42.1 s``, ``3 min 05 s``, ``1 h 02 min``; None when unknown."""
    s = _finite(value)
    if s is None:
        return None
    if s < 60:
        return f"{s:.1f} s"
    if s < 3600:
        return f"{int(s // 60)} min {int(s % 60):02d} s"
    return f"{int(s // 3600)} h {int(s % 3600 // 60):02d} min"


def fmt_usd(value: Any) -> str | None:
    usd = _finite(value)
    if usd is None:
        return None
    return f"${usd:.4f}" if usd < 1 else f"${usd:,.2f}"


def fmt_bytes(value: Any) -> str | None:
    n = _finite(value)
    if n is None:
        return None
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return None  # unreachable


def fmt_number(value: Any, digits: int = 3) -> str | None:
    """Metrics: integers as is, others to ``digits`` significant digits; None if not a number."""
    number = _finite(value)
    if number is None:
        return None
    if number.is_integer() and abs(number) < 1e15:
        return str(int(number))
    return f"{number:.{digits}g}"
