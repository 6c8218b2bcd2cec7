"""Rich views of the data area's values: the class-balance table, a manifest's inspection."""

from __future__ import annotations

import pandas as pd
from rich.console import Group as RichGroup
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from thyro.data.dedup import NEAR_THRESHOLD, natural_key
from thyro.data.inspection import Inspection, label_line
from thyro.data.manifest import LabelMeaning


def balance_table(balance: pd.DataFrame, title: str, meaning: LabelMeaning | None = None) -> Table:
    """The class-balance table of :func:`class_balance` (import and inspect print this one); the classes
    are named by ``meaning`` (``TI-RADS ≥ 4c (1)`` rather than ``malignant (1)`` for TI-RADS labels)."""
    names = {}
    if meaning is not None and not meaning.malignancy:
        names = {"malignant (1)": f"{meaning.positive} (1)", "benign (0)": f"{meaning.negative} (0)"}
    t = Table(title=title, header_style="bold")
    t.add_column("")
    for col in balance.columns:
        t.add_column(col, justify="right")
    for name, row in balance.iterrows():
        if name == "mixed" and not row.any():
            continue
        shown = escape(names.get(str(name), str(name)))
        t.add_row(f"[bold]{shown}[/]" if name == "all" else shown, *[str(v) for v in row])
    return t


def render(result: Inspection, title: str = "manifest") -> RichGroup:
    """Rich tables of an :class:`Inspection`."""
    parts: list = [balance_table(result.balance, f"{title}: class balance", result.labels),
                   Text(label_line(result.labels))]
    parts += [Text(f"note: {n}", style="dim") for n in result.notes]

    d = Table(title="duplicate groups (several patients in one group)", header_style="bold")
    d.add_column("group")
    d.add_column("patients", overflow="fold")
    for g, pats in sorted(result.merged_groups.items(), key=lambda kv: natural_key(kv[0])):
        d.add_row(g, ", ".join(pats))
    if not result.merged_groups:
        d.add_row("-", "none")
    parts.append(d)

    e = Table(title="identical images (one set per row)", header_style="bold")
    e.add_column("set", justify="right")
    e.add_column("images", overflow="fold")
    if not result.has_hashes:
        e.add_row("-", "no content_hash column: import the manifest (thyro data import csv) to find duplicates")
    elif not result.exact_duplicates:
        e.add_row("-", "none")
    for k, images in enumerate(result.exact_duplicates, 1):  # one set per row, one image per line
        e.add_row(str(k), "\n".join(images), end_section=True)
    parts.append(e)
    if result.near_duplicates:
        nd = Table(title=f"near duplicates (pHash distance <= {NEAR_THRESHOLD})", header_style="bold")
        nd.add_column("image", overflow="fold")
        nd.add_column("image", overflow="fold")
        nd.add_column("bits", justify="right")
        for a, b, d in result.near_duplicates:
            nd.add_row(a, b, str(d))
        parts.append(nd)

    s = Table(title="image sizes and modes", header_style="bold")
    s.add_column("size (WxH)")
    s.add_column("images", justify="right")
    s.add_column("mode")
    s.add_column("images", justify="right")
    sizes, modes = result.sizes.most_common(), result.modes.most_common()
    for i in range(max(len(sizes), len(modes))):
        a = sizes[i] if i < len(sizes) else ("", "")
        b = modes[i] if i < len(modes) else ("", "")
        s.add_row(a[0], str(a[1]), b[0], str(b[1]))
    parts.append(s)
    if result.unreadable:
        parts.append(f"[red]{len(result.unreadable)} image(s) unreadable[/]: {', '.join(result.unreadable[:10])} "
                     f"(run `thyro data validate` for details)")
    return RichGroup(*parts)
