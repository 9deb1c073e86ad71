"""Bar charts as SVG, drawn on the server: no chart library, no script, nothing fetched.

Each chart is a labelled image (``role="img"`` with a title) whose bars also carry their
values as text, so the figures read the same without sight of the bars.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from markupsafe import Markup, escape

WIDTH = 460
LABEL_WIDTH = 120
VALUE_WIDTH = 80
ROW = 26
BAR = 18


@dataclass(frozen=True)
class Bar:
    label: str
    value: Decimal | int | None  # None: no figure (nothing to measure), drawn as "—"


def bar_chart(chart_id: str, title: str, bars: list[Bar], unit: str = "",
              scale_to: Decimal | int | None = None) -> Markup:
    """Horizontal bars, one per row, scaled to ``scale_to`` (default: the largest)."""
    known = [Decimal(b.value) for b in bars if b.value is not None]
    top = Decimal(scale_to) if scale_to is not None else max(known, default=Decimal(0))
    span = WIDTH - LABEL_WIDTH - VALUE_WIDTH
    height = max(1, len(bars)) * ROW + 8
    parts = [
        f'<svg id="{escape(chart_id)}" class="chart" role="img" '
        f'aria-labelledby="{escape(chart_id)}-title" viewBox="0 0 {WIDTH} {height}" '
        f'width="{WIDTH}" height="{height}">',
        f'<title id="{escape(chart_id)}-title">{escape(title)}</title>',
    ]
    if not bars:
        parts.append(f'<text x="0" y="{ROW - 8}" class="empty">nothing to show</text>')
    for row, bar in enumerate(bars):
        y = row * ROW + 4
        length = 0.0
        if bar.value is not None and top > 0:
            length = float(Decimal(bar.value) / top) * span
        shown = "—" if bar.value is None else f"{bar.value}{unit}"
        parts.append(
            f'<g class="bar"><text x="{LABEL_WIDTH - 8}" y="{y + BAR - 4}" '
            f'text-anchor="end">{escape(bar.label)}</text>'
            f'<rect x="{LABEL_WIDTH}" y="{y}" width="{length:.1f}" height="{BAR}" rx="2">'
            f'<title>{escape(bar.label)}: {escape(shown)}</title></rect>'
            f'<text x="{LABEL_WIDTH + length + 6:.1f}" y="{y + BAR - 4}" class="value">'
            f'{escape(shown)}</text></g>')
    parts.append("</svg>")
    return Markup("".join(parts))
