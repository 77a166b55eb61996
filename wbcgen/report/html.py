"""HTML building blocks for the self-contained report: escaping, tables, confusion heat
maps, inline images (base64 data URIs) and SVG line charts. No external resources."""
from __future__ import annotations

import base64
import html
import math
from pathlib import Path

PALETTE = ("#1f77b4", "#d62728", "#9467bd", "#2ca02c", "#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#222222")

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;max-width:1180px;color:#222;
background:#fff;padding:0 16px;line-height:1.4}
h1{font-size:1.6em;margin-bottom:4px}h2{margin-top:32px;border-bottom:2px solid #ddd;padding-bottom:4px}
h3{margin-bottom:6px}.meta{color:#666;font-size:.9em}.note{color:#8a5a00;background:#fff7e0;padding:6px 10px;
border-left:4px solid #e0a800;margin:8px 0}.leak{color:#fff;background:#c62828;padding:10px 14px;
font-weight:600;margin:12px 0;border-radius:3px}table{border-collapse:collapse;margin:8px 0 16px}
td,th{border:1px solid #ccc;padding:3px 8px;text-align:right;font-size:.92em}th{background:#f3f3f3}
td:first-child,th:first-child{text-align:left}.paper{color:#555;font-style:italic}
.pair{display:flex;gap:16px;flex-wrap:wrap;align-items:flex-start}.pair figure{margin:0}
figcaption{font-size:.85em;color:#555;text-align:center}img.grid{image-rendering:pixelated;max-width:540px}
.cm td{min-width:42px;text-align:center}.kpi{display:inline-block;margin:6px 18px 6px 0;padding:8px 14px;
background:#f5f8fc;border-radius:6px}.kpi b{font-size:1.4em;display:block}
table.kv td{text-align:left;max-width:900px;word-break:break-all}
"""

#: Checks every inline image decoded; a broken one is a console error (the test looks for it).
SCRIPT = """
window.addEventListener('load', function () {
  var imgs = document.images, bad = 0;
  for (var i = 0; i < imgs.length; i++) {
    if (!imgs[i].complete || imgs[i].naturalWidth === 0) { bad++; console.error('wbcgen-report: broken image ' + i); }
  }
  document.body.setAttribute('data-report-ok', bad === 0 ? 'yes' : 'no');
  document.body.setAttribute('data-images', String(imgs.length));
});
"""


def esc(x) -> str:
    return html.escape(str(x), quote=True)


def pct(v, digits: int = 1) -> str:
    return "–" if v is None else f"{100 * v:.{digits}f}%"


def num(v, digits: int = 3) -> str:
    if v is None:
        return "–"
    if isinstance(v, int):
        return f"{v:,}"
    if v != 0 and (abs(v) < 1e-2 or abs(v) >= 1e5):
        return f"{v:.{digits}g}"
    return f"{v:.{digits}f}"


def page(title: str, body: list[str], subtitle: str = "") -> str:
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{esc(title)}</title>"
            f"<link rel=\"icon\" href=\"data:,\"><style>{CSS}</style></head><body>"
            f"<h1>{esc(title)}</h1><div class=\"meta\">{esc(subtitle)}</div>"
            + "\n".join(body) + f"<script>{SCRIPT}</script></body></html>\n")


def banner(text: str) -> str:
    """A red warning banner (results that must not be read as honest numbers)."""
    return f"<div class=\"leak\" role=\"alert\">{esc(text)}</div>"


def note(text: str) -> str:
    return f"<div class=\"note\">{esc(text)}</div>"


def table(header: list[str], rows: list[list], cls: str = "") -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c if isinstance(c, Raw) else esc(c)}</td>" for c in r) + "</tr>"
                   for r in rows)
    return f"<table class=\"{cls}\"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


class Raw(str):
    """A table cell that is already HTML."""


def img_data_uri(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64," + base64.b64encode(data).decode("ascii")


def img_file(path: Path, alt: str, cls: str = "grid") -> str:
    mime = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg"}.get(path.suffix.lower(), "image/png")
    return f"<img class=\"{cls}\" alt=\"{esc(alt)}\" src=\"{img_data_uri(path.read_bytes(), mime)}\">"


def img_bytes(data: bytes, alt: str, cls: str = "grid") -> str:
    return f"<img class=\"{cls}\" alt=\"{esc(alt)}\" src=\"{img_data_uri(data)}\">"


def figure(inner: str, caption: str) -> str:
    return f"<figure>{inner}<figcaption>{esc(caption)}</figcaption></figure>"


def confusion(cm, classes, title: str = "", paper_cm=None) -> str:
    """A confusion matrix as a heat-mapped table (rows true, columns predicted); the paper's
    matrix, if given, in a second table beside it."""
    abbrev = [c[:2].upper() + "." for c in classes]

    def one(m, caption):
        rows_html = []
        for i, row in enumerate(m):
            tot = sum(row) or 1
            cells = []
            for j, v in enumerate(row):
                a = v / tot
                bg = f"rgba(31,119,180,{a:.2f})" if i == j else f"rgba(214,39,40,{min(1.0, 2 * a):.2f})"
                colour = "#fff" if a > 0.6 else "#222"
                cells.append(f"<td style=\"background:{bg};color:{colour}\">{v:,}</td>")
            rows_html.append(f"<tr><th>{esc(abbrev[i])}</th>{''.join(cells)}</tr>")
        head = "<tr><th>true \\ pred</th>" + "".join(f"<th>{esc(a)}</th>" for a in abbrev) + "</tr>"
        return (f"<figure><table class=\"cm\">{head}{''.join(rows_html)}</table>"
                f"<figcaption>{esc(caption)}</figcaption></figure>")

    parts = [one(cm, title or "ours")]
    if paper_cm is not None:
        parts.append(one(paper_cm, "paper"))
    return f"<div class=\"pair\">{''.join(parts)}</div>"


def svg_lines(series: dict[str, list[tuple[float, float]]], *, title: str, xlabel: str, ylabel: str,
              width: int = 640, height: int = 300, ylim: tuple[float, float] | None = None,
              logy: bool = False) -> str:
    """An inline SVG line chart. ``series`` maps a name to (x, y) points; non-finite points
    are dropped. ``logy`` plots log10(y) for positive y (loss curves)."""
    clean = {}
    for k, pts in series.items():
        p = [(float(x), float(y)) for x, y in pts if x is not None and y is not None
             and math.isfinite(float(x)) and math.isfinite(float(y)) and (not logy or float(y) > 0)]
        if p:
            clean[k] = [(x, math.log10(y) if logy else y) for x, y in p]
    if not clean:
        return note(f"{title}: no data to plot")
    L, R, T, B = 56, 150, 28, 40
    pw, ph = width - L - R, height - T - B
    xs = [x for p in clean.values() for x, _ in p]
    ys = [y for p in clean.values() for _, y in p]
    x0, x1 = min(xs), max(xs)
    y0, y1 = ylim if ylim else (min(ys), max(ys))
    if x1 == x0:
        x0, x1 = x0 - 1, x1 + 1
    if y1 == y0:
        y0, y1 = y0 - 1, y1 + 1

    def sx(x):
        return L + (x - x0) / (x1 - x0) * pw

    def sy(y):
        return T + (1 - (y - y0) / (y1 - y0)) * ph

    out = [f"<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" "
           f"viewBox=\"0 0 {width} {height}\" role=\"img\" aria-label=\"{esc(title)}\">",
           f"<rect x=\"0\" y=\"0\" width=\"{width}\" height=\"{height}\" fill=\"#fff\"/>",
           f"<text x=\"{L}\" y=\"16\" font-size=\"13\" font-weight=\"bold\">{esc(title)}</text>",
           f"<rect x=\"{L}\" y=\"{T}\" width=\"{pw}\" height=\"{ph}\" fill=\"none\" stroke=\"#999\"/>"]
    for k in range(5):
        y = y0 + (y1 - y0) * k / 4
        lab = f"{10 ** y:.3g}" if logy else f"{y:.3g}"
        out.append(f"<line x1=\"{L}\" x2=\"{L + pw}\" y1=\"{sy(y):.1f}\" y2=\"{sy(y):.1f}\" stroke=\"#eee\"/>"
                   f"<text x=\"{L - 4}\" y=\"{sy(y) + 4:.1f}\" font-size=\"10\" text-anchor=\"end\">{lab}</text>")
        x = x0 + (x1 - x0) * k / 4
        out.append(f"<text x=\"{sx(x):.1f}\" y=\"{T + ph + 14}\" font-size=\"10\" text-anchor=\"middle\">{x:.3g}</text>")
    out.append(f"<text x=\"{L + pw / 2:.0f}\" y=\"{height - 6}\" font-size=\"11\" text-anchor=\"middle\">"
               f"{esc(xlabel)}</text><text x=\"12\" y=\"{T + ph / 2:.0f}\" font-size=\"11\" text-anchor=\"middle\" "
               f"transform=\"rotate(-90 12 {T + ph / 2:.0f})\">{esc(ylabel + (' (log)' if logy else ''))}</text>")
    for i, (name, pts) in enumerate(clean.items()):
        col = PALETTE[i % len(PALETTE)] if name != "overall" else "#222"
        path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in pts)
        out.append(f"<polyline fill=\"none\" stroke=\"{col}\" stroke-width=\"2\" points=\"{path}\"/>")
        if len(pts) <= 40:
            out += [f"<circle cx=\"{sx(x):.1f}\" cy=\"{sy(y):.1f}\" r=\"3\" fill=\"{col}\"/>" for x, y in pts]
        ly = T + 8 + 16 * i
        out.append(f"<line x1=\"{L + pw + 10}\" x2=\"{L + pw + 30}\" y1=\"{ly}\" y2=\"{ly}\" stroke=\"{col}\" "
                   f"stroke-width=\"3\"/><text x=\"{L + pw + 36}\" y=\"{ly + 4}\" font-size=\"11\">{esc(name)}</text>")
    out.append("</svg>")
    return "".join(out)
