"""Tables rendered the same way to HTML and Markdown, so both outputs say the same thing."""

from __future__ import annotations

import html
import json
import math
from dataclasses import dataclass, field

import pandas as pd


def missing(v) -> bool:
    if v is None:
        return True
    try:
        return bool(pd.isna(v))
    except (TypeError, ValueError):
        return False


def money(v) -> str:
    if missing(v) or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    return f"${v:,.2f}" if abs(v) >= 0.01 else f"${v:.2e}"


def ms(v) -> str:
    return "-" if missing(v) else f"{v:,.1f}"


def num(v, nd: int = 1) -> str:
    if missing(v):
        return "-"
    if isinstance(v, float) and v.is_integer() and nd == 0:
        return f"{int(v)}"
    if nd and v and abs(v) < 10**-nd * 5:  # e.g. 0.04 images/s: keep 2 significant digits
        return f"{v:.2g}"
    return f"{v:,.{nd}f}"


def integer(v) -> str:
    return "-" if missing(v) else f"{int(v)}"


def pct(v) -> str:
    return "-" if missing(v) else f"{v:.1f} %"


def text(v) -> str:
    return "-" if missing(v) or v == "" else str(v)


def versions(blob) -> str:
    """tool_versions JSON as 'torch 2.13, onnxruntime 1.32, …'."""
    if missing(blob):
        return "-"
    try:
        d = json.loads(blob) if isinstance(blob, str) else dict(blob)
    except (TypeError, ValueError):
        return str(blob)
    return ", ".join(f"{k} {v}" for k, v in sorted(d.items()))


@dataclass
class Table:
    headers: list[str]
    rows: list[list[str]] = field(default_factory=list)
    classes: list[str] = field(default_factory=list)  # per row: "" | "flag" | "synthetic"
    caption: str = ""

    def add(self, cells: list[str], cls: str = "") -> None:
        self.rows.append(cells)
        self.classes.append(cls)

    def html(self) -> str:
        e = html.escape
        head = "".join(f"<th>{e(h)}</th>" for h in self.headers)
        body = []
        for cells, cls in zip(self.rows, self.classes, strict=True):
            attr = f' class="{cls}"' if cls else ""
            body.append(f"<tr{attr}>" + "".join(f"<td>{e(c)}</td>" for c in cells) + "</tr>")
        cap = f"<caption>{e(self.caption)}</caption>" if self.caption else ""
        return (
            f'<div class="table-wrap"><table>{cap}<thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(body)}</tbody></table></div>"
        )

    def markdown(self) -> str:
        def cell(c: str) -> str:
            return c.replace("|", "\\|").replace("\n", " ")

        lines = []
        if self.caption:
            lines += [f"*{self.caption}*", ""]
        lines.append("| " + " | ".join(cell(h) for h in self.headers) + " |")
        lines.append("|" + "|".join("---" for _ in self.headers) + "|")
        for cells, cls in zip(self.rows, self.classes, strict=True):
            mark = "**⚠** " if cls == "flag" else ""
            lines.append("| " + mark + " | ".join(cell(c) for c in cells) + " |")
        return "\n".join(lines)
