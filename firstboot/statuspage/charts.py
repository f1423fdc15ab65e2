"""The status page's plots: SVG made on the box by pygal, from status --json's data.

pygal draws the SVG; its inline script (a config for pygal's optional tooltips, fetched
from a third party when enabled) is taken out of the tree, so the images carry no script
and the page needs no JavaScript: each plot is an <img>, and a table beside it holds the
same numbers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import pygal
from pygal.etree import etree
from pygal.style import Style

MIB = 1024 * 1024
WIDTH, HEIGHT = 900, 320
# Series names the browser test and people look for in the backup plot.
SIZE_SERIES = "size (MiB)"
FAILED_SERIES = "failed"
PASSED_DRILLS_SERIES = "passed (s to healthy)"

BLUE, GREEN, RED, PURPLE, AMBER = "#1f6feb", "#2da44e", "#cf222e", "#8250df", "#bf8700"


def _style(*colors: str) -> Style:
    """pygal colours series in drawing order: the left axis's first, then the right's."""
    return Style(background="#ffffff", plot_background="#ffffff", foreground="#222222",
                 foreground_strong="#111111", foreground_subtle="#888888", colors=colors,
                 font_family="sans-serif", legend_font_size=13, label_font_size=11)


def _chart(kind: type[pygal.graph.graph.Graph], title: str, style: Style,
           **options: Any) -> Any:
    # Legends beside the plot: the left one names the left axis's series, the right one
    # the right axis's (pygal squeezes the plot when both go below it).
    return kind(js=[], style=style, width=WIDTH, height=HEIGHT, title=title,
                x_label_rotation=20, show_x_guides=False, truncate_legend=-1,
                print_values=False, value_formatter=_number, **options)


def _when(value: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(str(value))
    except ValueError:
        return None


def _svg(chart: Any) -> str:
    """The chart's SVG without pygal's script element."""
    root = chart.render_tree()
    for parent in root.iter():
        for child in list(parent):
            if child.tag == "script":
                parent.remove(child)
    out = etree.tostring(root)
    return out.decode() if isinstance(out, bytes) else str(out)


def _number(value: float) -> str:
    return f"{value:.3g}"


def _label(when: datetime) -> str:
    return when.strftime("%m-%d %H:%M")


def time_labels(times: Sequence[datetime], most: int = 6) -> list[datetime]:
    """At most `most` distinct times, spread over the points (pygal would label a tick
    every few seconds of a short range, all reading the same minute)."""
    distinct = sorted({t.replace(second=0, microsecond=0): t for t in times}.values())
    if len(distinct) <= most:
        return distinct
    step = (len(distinct) - 1) / (most - 1)
    return [distinct[round(i * step)] for i in range(most)]


def backup_points(backup: Mapping[str, Any]) -> tuple[list[dict[str, Any]], list[datetime]]:
    """The plotted backups (oldest first, with a time) and the times of failed runs."""
    made = [(when, b) for b in backup.get("history") or []
            if (when := _when(b.get("finished_at"))) is not None]
    failed = [when for f in backup.get("failed_runs") or []
              if (when := _when(f.get("at"))) is not None]
    return [b for _, b in sorted(made, key=lambda pair: pair[0])], sorted(failed)


def backups_svg(backup: Mapping[str, Any]) -> str:
    """The last backups: size and data added (MiB, left axis), duration and longest pause
    (seconds, right axis); a failed run is a red mark on the zero line."""
    made, failed = backup_points(backup)
    chart = _chart(pygal.DateTimeLine, "Backups", _style(BLUE, GREEN, RED, PURPLE, AMBER),
                   x_value_formatter=_label,
                   dots_size=4, stroke_style={"width": 2}, no_data_text="no backup yet")
    if not made and not failed:
        return _svg(chart)  # pygal cannot scale a right axis without values
    times = [_when(b["finished_at"]) for b in made]
    chart.add(SIZE_SERIES, [(t, round(int(b.get("original_size", 0)) / MIB, 2))
                            for t, b in zip(times, made, strict=True)])
    chart.add("data added (MiB)", [(t, round(int(b.get("deduplicated_size", 0)) / MIB, 2))
                                   for t, b in zip(times, made, strict=True)])
    chart.add("duration (s)", [(t, float(b.get("seconds") or 0))
                               for t, b in zip(times, made, strict=True)], secondary=True)
    chart.add("longest pause (s)", [(t, longest_pause(b)) for t, b in zip(times, made,
                                                                         strict=True)],
              secondary=True)
    chart.add(FAILED_SERIES, [(t, 0) for t in failed], stroke=False, dots_size=7)
    chart.x_labels = time_labels([t for t in times if t is not None] + failed)
    return _svg(chart)


def longest_pause(entry: Mapping[str, Any]) -> float:
    pauses = entry.get("pauses") or {}
    values = [float(v) for v in pauses.values() if isinstance(v, int | float)]
    return round(max(values), 2) if values else 0.0


def drills_svg(drills: Sequence[Mapping[str, Any]]) -> str:
    """Each drill's time to healthy (s): passed in green, failed in red."""
    chart = _chart(pygal.DateTimeLine, "Restore drills: time to healthy", _style(GREEN, RED),
                   x_value_formatter=_label, dots_size=6, no_data_text="no drill yet")
    passed: list[tuple[datetime, float]] = []
    failed: list[tuple[datetime, float]] = []
    for drill in drills:
        when = _when(drill.get("started_at"))
        if when is None:
            continue
        point = (when, float(drill.get("seconds_to_healthy") or drill.get("seconds") or 0))
        (passed if drill.get("result") == "pass" else failed).append(point)
    chart.add(PASSED_DRILLS_SERIES, passed, stroke=False)
    chart.add("failed", failed, stroke=False)
    if passed or failed:
        chart.x_labels = time_labels([t for t, _ in passed + failed])
    return _svg(chart)
