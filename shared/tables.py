"""The one table writer: every Markdown table of a report and every aligned console table, through tabulate.
Cells arrive as the caller formatted them (numbers already rounded to what the table shows, an indent kept): nothing
is parsed or stripped again."""
from __future__ import annotations

from collections.abc import Iterable, Sequence

from tabulate import tabulate


def _cells(rows: Iterable[Sequence]) -> list[list[str]]:
    return [["" if cell is None else str(cell) for cell in row] for row in rows]


def markdown(header: Sequence, rows: Iterable[Sequence], align: Sequence[str] | None = None) -> str:
    """A GitHub Markdown table: a header row, the separator, one line per row. align: "left"/"right"/"center" per
    column (tabulate's colalign; the default leaves every column to the left)."""
    return tabulate(_cells(rows), headers=[str(cell) for cell in header], tablefmt="github", disable_numparse=True,
                    colalign=align, preserve_whitespace=True)


def console(header: Sequence, rows: Iterable[Sequence], align: Sequence[str] | None = None) -> str:
    """Columns padded to their widest cell, the header underlined: for a terminal. align as for markdown()."""
    return tabulate(_cells(rows), headers=[str(cell) for cell in header], tablefmt="simple", disable_numparse=True,
                    colalign=align, preserve_whitespace=True)
