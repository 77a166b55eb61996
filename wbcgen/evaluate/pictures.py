"""Small PNG pictures drawn with PIL (no matplotlib): image grids and the dose-response plot."""
from __future__ import annotations

import io

import torch
from PIL import Image, ImageDraw, ImageFont

#: One colour per class (CLASSES order) and one for the overall curve.
COLOURS = ("#1f77b4", "#d62728", "#9467bd", "#2ca02c", "#ff7f0e")
OVERALL = "#222222"


def grid_png(images_u8: torch.Tensor, cols: int = 8, pad: int = 2) -> bytes:
    """A PNG grid of uint8 N×3×H×W images (white padding)."""
    n = len(images_u8)
    if n == 0:
        img = Image.new("RGB", (64, 16), "white")
    else:
        h, w = images_u8.shape[-2:]
        cols = min(cols, n)
        rows = (n + cols - 1) // cols
        img = Image.new("RGB", (cols * (w + pad) + pad, rows * (h + pad) + pad), "white")
        for i in range(n):
            tile = Image.fromarray(images_u8[i].permute(1, 2, 0).contiguous().numpy())
            img.paste(tile, (pad + (i % cols) * (w + pad), pad + (i // cols) * (h + pad)))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def line_plot_png(xs: list[float], series: dict[str, list[float | None]], *, title: str, xlabel: str,
                  ylabel: str, colours: dict[str, str], size=(720, 440)) -> bytes:
    """A simple line chart (y in [0, 1]) with a legend, as PNG bytes."""
    W, H = size
    left, right, top, bottom = 60, 150, 36, 50
    img = Image.new("RGB", (W, H), "white")
    d = ImageDraw.Draw(img)
    font = ImageFont.load_default()
    d.text((left, 10), title, fill="black", font=font)
    pw, ph = W - left - right, H - top - bottom
    d.rectangle([left, top, left + pw, top + ph], outline="#888888")
    lo = min([v for s in series.values() for v in s if v is not None] + [1.0])
    ymin = max(0.0, min(0.5, (int(lo * 10) / 10.0)))
    xmin, xmax = min(xs), max(xs)
    xspan = (xmax - xmin) or 1.0

    def px(x, y):
        return left + (x - xmin) / xspan * pw, top + (1 - (y - ymin) / ((1 - ymin) or 1)) * ph

    for k in range(6):
        y = ymin + (1 - ymin) * k / 5
        _, yy = px(xmin, y)
        d.line([left, yy, left + pw, yy], fill="#eeeeee")
        d.text((8, yy - 6), f"{y:.2f}", fill="#444444", font=font)
    for x in xs:
        xx, _ = px(x, ymin)
        d.text((xx - 8, top + ph + 6), f"{x:g}", fill="#444444", font=font)
    d.text((left + pw // 2 - 60, H - 20), xlabel, fill="black", font=font)
    d.text((4, top - 16), ylabel, fill="black", font=font)
    for j, (name, ys) in enumerate(series.items()):
        col = colours.get(name, OVERALL)
        pts = [px(x, y) for x, y in zip(xs, ys) if y is not None]
        if len(pts) > 1:
            d.line(pts, fill=col, width=3 if name == "overall" else 2)
        for x, y in pts:
            d.ellipse([x - 3, y - 3, x + 3, y + 3], fill=col)
        ly = top + 14 * j
        d.line([left + pw + 10, ly + 6, left + pw + 30, ly + 6], fill=col, width=3)
        d.text((left + pw + 36, ly), name, fill="black", font=font)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()
