"""Jupyter's rich display of a fit and its summary: lme4's summary blocks as HTML tables.

The cells are the text summary's own (lmmfast._present.summary formats them, R's rounding
included): each block is rendered once more with a recorder in place of the plain-text
layout, so the HTML and the printout cannot disagree on a digit.
"""

from __future__ import annotations

from html import escape

from .summary import LmerSummary

STYLE = (
    "<style>.lmmfast-summary table{border-collapse:collapse;margin:0.3em 0 0.8em 0}"
    ".lmmfast-summary td,.lmmfast-summary th{padding:0.1em 0.6em;text-align:right;"
    "font-family:monospace}.lmmfast-summary td.name,.lmmfast-summary th.name{text-align:left}"
    ".lmmfast-summary h4{margin:0.4em 0 0.1em 0}</style>"
)


class _Recorder(LmerSummary):
    """The summary with its tables and named vectors recorded as cells."""

    def __init__(self, summary: LmerSummary):
        self.__dict__.update(summary.__dict__)
        self.recorded: list[tuple] = []

    def _table(self, header, rows, right=False):
        self.recorded.append(("table", list(header), [list(r) for r in rows], right))
        return super()._table(header, rows, right)

    def _vector(self, names, cells):
        self.recorded.append(("vector", list(names), list(cells)))
        return super()._vector(names, cells)

    def block(self, method):
        """(text, recorded cells) of one block of the printout."""
        self.recorded = []
        text = method()
        return text, self.recorded


def summary_html(summary: LmerSummary) -> str:
    """The summary as HTML: the title lines, then one table per block of lme4's printout."""
    rec = _Recorder(summary)
    parts = [STYLE, '<div class="lmmfast-summary">']
    title, _ = rec.block(rec._title)
    lines = title.split("\n")
    k = next(i for i, x in enumerate(lines) if x.startswith("Formula:"))
    head = " ".join(x.strip() for x in lines[:k]).replace("[ ", "[")  # undo R's strwrap
    parts.append(f"<p><b>{escape(head)}</b>")
    parts += [f"<br>{escape(x)}" for x in lines[k:]]
    parts.append("</p>")
    text, cells = rec.block(rec._criterion)
    parts.append(_vector_html(cells[0]) if cells else f"<p>{escape(text)}</p>")
    _, cells = rec.block(rec._residuals)
    parts.append("<h4>Scaled residuals</h4>" + _vector_html(cells[0]))
    text, cells = rec.block(rec._random)
    parts.append("<h4>Random effects</h4>" + _table_html(cells[0], skip_first=True))
    for line in text.split("\n")[1 + 1 + len(cells[0][2]) :]:
        parts.append(f"<p>{escape(line)}</p>")
    text, cells = rec.block(rec._fixed)
    parts.append("<h4>Fixed effects</h4>" + _table_html(cells[0]))
    if "Signif. codes" in text:
        parts.append(f"<p><small>{escape(text.split(chr(10))[-1])}</small></p>")
    corr = rec.block(rec._correlation)
    if corr[0]:
        if corr[1]:
            parts.append("<h4>Correlation of fixed effects</h4>" + _table_html(corr[1][0]))
        else:
            parts.append(f"<p>{escape(corr[0])}</p>")
    warn = rec._warnings().strip()
    if warn:
        parts += [f"<p><i>{escape(w)}</i></p>" for w in warn.split("\n")]
    parts.append("</div>")
    return "\n".join(parts)


def fit_html(fit) -> str:
    """A fit displays as its summary."""
    return summary_html(fit.summary())


def _vector_html(rec) -> str:
    _, names, cells = rec
    head = "".join(f"<th>{escape(n.strip())}</th>" for n in names)
    body = "".join(f"<td>{escape(c.strip())}</td>" for c in cells)
    return f"<table><tr>{head}</tr><tr>{body}</tr></table>"


def _table_html(rec, skip_first: bool = False) -> str:
    """A character matrix (first column the row names) as a table; skip_first drops an empty
    row-name column (the random-effects block has one)."""
    _, header, rows, _ = rec
    start = 1 if skip_first else 0
    out = ["<table><tr>"]
    for k, h in enumerate(header[start:], start):
        cls = ' class="name"' if k == 0 or (skip_first and k <= 2) else ""
        out.append(f"<th{cls}>{escape(h.strip())}</th>")
    out.append("</tr>")
    for r in rows:
        out.append("<tr>")
        for k, c in enumerate(r[start:], start):
            cls = ' class="name"' if k == 0 or (skip_first and k <= 2) else ""
            out.append(f"<td{cls}>{escape(c.strip())}</td>")
        out.append("</tr>")
    out.append("</table>")
    return "".join(out)
