"""Pictures as inline SVG, built in Python so every text is escaped: decision tables as bands on an axis, the
therapy timeline, and alert outcomes over time.

Geometry is computed here and nowhere else; pages only place the returned markup. Colours come from CSS classes
(static/workbench.css), so the pictures follow the page's look and need no inline style.
"""
from __future__ import annotations

import bisect
import datetime as dt
import heapq
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from markupsafe import Markup, escape

from engine.model import Band, ParamRef, Ruleset, Table
from engine.templates import format_number

PALETTE_SIZE = 8  # CSS classes band-0 .. band-7


def el(tag: str, attrs: dict[str, Any] | None = None, *children: Any) -> Markup:
    """One element; attribute names with '_' become '-', None attributes are left out, text is escaped."""
    parts = [f"<{tag}"]
    for name, value in (attrs or {}).items():
        if value is None:
            continue
        key = name.rstrip("_").replace("_", "-")
        parts.append(f' {key}="{escape(_fmt(value))}"')
    inner = "".join(str(c) if isinstance(c, Markup) else str(escape(c)) for c in children if c is not None)
    return Markup("".join(parts) + f">{inner}</{tag}>")


def _fmt(value: Any) -> str:
    return f"{value:.1f}" if isinstance(value, float) else str(value)


def svg(width: int, height: int, label: str, *children: Any, css: str = "chart") -> Markup:
    return el("svg", {"xmlns": "http://www.w3.org/2000/svg", "viewBox": f"0 0 {width} {height}", "width": width,
                      "height": height, "role": "img", "aria_label": label, "class": css},
              el("title", {}, label), *children)


@dataclass(frozen=True)
class Scale:
    """A linear map from data values to pixels."""

    low: float
    high: float
    start: float
    end: float

    def __call__(self, value: float) -> float:
        span = (self.high - self.low) or 1.0
        return self.start + (value - self.low) / span * (self.end - self.start)


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round tick values covering [low, high]."""
    span = high - low
    if span <= 0:
        return [low]
    raw = span / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    first = math.ceil(low / step) * step
    return [round(first + i * step, 10) for i in range(int((high - first) / step + 1e-9) + 1)]


# --- decision tables ------------------------------------------------------------------------


@dataclass(frozen=True)
class Segment:
    low: float
    high: float  # low == high: a single point


def band_output(band: Band, ruleset: Ruleset | None, unit: str) -> str:
    """What a row maps to, as the pharmacist reads it: '10 mg/day' or 'increase'."""
    if isinstance(band.output, ParamRef):
        parameter = ruleset.parameters.get(band.output.name) if ruleset else None
        if parameter is None:
            return band.output.name
        return f"{format_number(parameter.value)} {parameter.unit or unit}".strip()
    text = format_number(band.output)
    return f"{text} {unit}" if isinstance(band.output, (int, float)) and unit else text


def band_source(band: Band) -> str:
    """The parameter a row's output comes from, if any."""
    return band.output.name if isinstance(band.output, ParamRef) else ""


def fit(text: str, pixels: float, char_width: float = 6.2) -> str:
    """Text cut to about `pixels` wide (an estimate: SVG text is not measured server-side)."""
    room = int(pixels / char_width)
    if len(text) <= room:
        return text
    return text[: max(room - 1, 1)] + "…" if room > 1 else ""


def _domain_band(table: Table) -> Band:
    low, high, low_closed, high_closed = table.domain
    return Band(low, high, low_closed, high_closed, None, "domain")


def _display_range(table: Table) -> tuple[float, float]:
    """The stretch of the axis to draw: finite bounds, with room after an open end."""
    points = sorted({p for b in table.bands for p in (b.low, b.high) if p is not None}
                    | {p for p in table.domain[:2] if p is not None})
    if not points:
        return 0.0, 1.0
    span = (points[-1] - points[0]) or abs(points[0]) or 1.0
    low = table.domain[0] if table.domain[0] is not None else points[0] - span * 0.25
    high = table.domain[1] if table.domain[1] is not None else points[-1] + span * 0.6
    return float(low), float(high)


def coverage_problems(table: Table, low: float, high: float) -> tuple[list[Segment], list[Segment]]:
    """Gaps (inside the domain, no row) and overlaps (more than one row) on [low, high], found by probing every
    boundary and every stretch between two boundaries."""
    domain = _domain_band(table)
    bounds = sorted({p for b in table.bands for p in (b.low, b.high) if p is not None and low <= p <= high}
                    | {low, high})
    probes = [Segment(bounds[0], bounds[0])]
    for a, b in itertools.pairwise(bounds):
        probes += [Segment(a, b), Segment(b, b)]
    where = [(s.low + s.high) / 2 for s in probes]  # increasing
    gaps, overlaps = [], []
    for x, segment, hits in zip(where, probes, _rows_containing(table.bands, where), strict=True):
        if not domain.contains(x):
            continue
        if hits == 0:
            gaps.append(segment)
        elif hits > 1:
            overlaps.append(segment)
    return _merge(gaps), _merge(overlaps)


def _rows_containing(bands: Sequence[Band], where: list[float]) -> list[int]:
    """How many bands contain each of the increasing values `where`. A band contains one run of them, found by
    bisection, so each band costs log n and not n."""
    change = [0] * (len(where) + 1)
    for band in bands:
        first = 0 if band.low is None else (bisect.bisect_left if band.low_closed else bisect.bisect_right)(
            where, band.low)
        end = len(where) if band.high is None else (bisect.bisect_right if band.high_closed else bisect.bisect_left)(
            where, band.high)
        if first < end:
            change[first] += 1
            change[end] -= 1
    return list(itertools.accumulate(change[:-1]))


def _merge(segments: list[Segment]) -> list[Segment]:
    """Adjacent pieces (a stretch and its end points) become one segment."""
    merged: list[Segment] = []
    for s in sorted(segments, key=lambda s: (s.low, s.high)):
        if merged and s.low <= merged[-1].high:
            merged[-1] = Segment(merged[-1].low, max(merged[-1].high, s.high))
        else:
            merged.append(s)
    return merged


def _lanes(bands: Sequence[Band]) -> list[int]:
    """Rows that overlap go on separate lanes, so an overlap is seen as two bars over one stretch. Taken in order of
    where they start, each row goes on the lowest lane whose last row has ended there."""
    found = [0] * len(bands)
    running: list[tuple[tuple, int]] = []  # (where its row ends, lane), soonest end first
    free: list[int] = []  # lanes whose rows have ended, lowest first
    for index in sorted(range(len(bands)), key=lambda i: _start(bands[i])):
        start = _start(bands[index])
        if _end(bands[index]) <= start:  # an empty band (the checks say so) overlaps nothing: lane 0
            continue
        while running and running[0][0] <= start:
            heapq.heappush(free, heapq.heappop(running)[1])
        lane = heapq.heappop(free) if free else len(running)
        found[index] = lane
        heapq.heappush(running, (_end(bands[index]), lane))
    return found


def _start(band: Band) -> tuple[float, int]:
    """Where a band starts, as a position: just after its low end when that end is open."""
    return (-math.inf if band.low is None else band.low, 0 if band.low_closed else 1)


def _end(band: Band) -> tuple[float, int]:
    """The first position after a band: just after its high end when that end is closed."""
    return (math.inf if band.high is None else band.high, 1 if band.high_closed else 0)


def _colours(table: Table) -> dict[str, int]:
    """A colour per distinct output (by its repr), in the order the rows first give it."""
    outputs = dict.fromkeys(repr(b.output) for b in table.bands)
    return {output: index % PALETTE_SIZE for index, output in enumerate(outputs)}


def table_chart(table: Table, ruleset: Ruleset | None = None, width: int = 900) -> Markup:
    """A decision table as coloured bands over its input axis; gaps and overlaps are drawn in red."""
    low, high = _display_range(table)
    lanes = _lanes(table.bands)
    lane_count = max(lanes, default=0) + 1
    top, lane_height = 24, 40
    axis_y = top + lane_count * lane_height + 6
    height = axis_y + 40
    x = Scale(low, high, 12, width - 60)
    colours = _colours(table)
    parts: list[Markup] = []
    gaps, overlaps = coverage_problems(table, low, high)
    parts += [_problem(x, s, top, axis_y, "gap") for s in gaps]
    for band, lane in zip(table.bands, lanes, strict=True):
        parts.append(_band(band, x, low, high, top + lane * lane_height, lane_height - 8,
                           colours[repr(band.output)],
                           band_output(band, ruleset, table.output_unit)))
    parts += [_problem(x, s, top, axis_y, "overlap") for s in overlaps]
    parts.append(_axis(table, x, low, high, axis_y, width))
    label = f"Table {table.name}: {len(table.bands)} rows over {table.input_unit or 'the input'}"
    if gaps or overlaps:
        label += f"; {len(gaps)} gap(s), {len(overlaps)} overlap(s)"
    legend = el("text", {"x": 12, "y": 14, "class": "legend"},
                f"{table.name}: {table.input_unit or 'input'} → {table.output_unit or 'output'}"
                "   ● bound included   ○ bound excluded")
    return svg(width, height, label, legend, *parts, css="chart table-chart")


def _band(band: Band, x: Scale, low: float, high: float, y: float, h: float, colour: int, text: str) -> Markup:
    left = x(band.low if band.low is not None else low)
    right = x(band.high if band.high is not None else high)
    right = max(right, left + 2)
    source = band_source(band)
    title = el("title", {}, f"{band.text} → {text}" + (f" ({source})" if source else "")
               + (f", line {band.line}" if band.line else ""))
    marks = []
    if band.low is not None:
        marks.append(el("circle", {"cx": left + 6, "cy": y + h - 6, "r": 3.5,
                                   "class": "bound closed" if band.low_closed else "bound open"}))
    if band.high is not None:
        marks.append(el("circle", {"cx": right - 6, "cy": y + h - 6, "r": 3.5,
                                   "class": "bound closed" if band.high_closed else "bound open"}))
    room = right - left - 24
    label = el("text", {"x": (left + right) / 2, "y": y + h / 2 - 1, "class": "band-label",
                        "text_anchor": "middle"}, fit(text, room, 7))
    interval = el("text", {"x": (left + right) / 2, "y": y + h - 3, "class": "band-interval",
                           "text_anchor": "middle"}, fit(band.text + (f" · {source}" if source else ""), room, 5.6))
    return el("g", {"class": f"band band-{colour}", "data_band": band.text},
              title, el("rect", {"x": left, "y": y, "width": right - left, "height": h, "rx": 3}),
              label, interval, *marks)


def _problem(x: Scale, segment: Segment, top: float, bottom: float, kind: str) -> Markup:
    left, right = x(segment.low), x(segment.high)
    if right - left < 3:
        left, right = left - 2, left + 2
    where = (format_number(segment.low) if segment.low == segment.high
             else f"{format_number(segment.low)} to {format_number(segment.high)}")
    return el("g", {"class": f"problem {kind}"},
              el("title", {}, f"{kind} at {where}"),
              el("rect", {"x": left, "y": top - 4, "width": right - left, "height": bottom - top + 4}),
              el("text", {"x": (left + right) / 2, "y": bottom + 30, "text_anchor": "middle"}, f"{kind}: {where}"))


def _axis(table: Table, x: Scale, low: float, high: float, y: float, width: int) -> Markup:
    ticks = sorted({p for b in table.bands for p in (b.low, b.high) if p is not None and low <= p <= high})
    parts = [el("line", {"x1": x(low), "x2": x(high), "y1": y, "y2": y, "class": "axis"})]
    for value in ticks:
        parts += [el("line", {"x1": x(value), "x2": x(value), "y1": y - 4, "y2": y + 4, "class": "axis"}),
                  el("text", {"x": x(value), "y": y + 16, "text_anchor": "middle", "class": "tick"},
                     format_number(value))]
    if table.domain[1] is None:
        parts.append(el("text", {"x": x(high) + 4, "y": y + 4, "class": "tick"}, "→ ∞"))
    parts.append(el("text", {"x": width - 4, "y": y + 16, "text_anchor": "end", "class": "unit"},
                    table.input_unit))
    return el("g", {"class": "axis-group"}, *parts)


# --- the therapy timeline ----------------------------------------------------------------------


@dataclass(frozen=True)
class TimelinePoint:
    day: int
    date: dt.date
    value: float


@dataclass(frozen=True)
class TimelineMark:
    day: int
    topic: str
    indicator: str
    text: str


@dataclass(frozen=True)
class Shade:
    """A horizontal stretch of the measurement axis (a table row), with what it maps to."""

    low: float | None
    high: float | None
    label: str
    colour: int


def timeline_chart(days: int, measure_label: str, points: Sequence[TimelinePoint], doses: Sequence[float | None],
                   dose_label: str, dose_max: float | None, marks: Sequence[TimelineMark],
                   events: Sequence[tuple[int, str]], shades: Sequence[Shade] = (), width: int = 960) -> Markup:
    """Measurement, dose level and decisions of each day on one day axis."""
    topics = list(dict.fromkeys(m.topic for m in marks))
    left, right = 170, width - 20
    x = Scale(0, max(days, 1), left, right)
    measure_top, measure_height = 44, 180
    dose_top, dose_height = measure_top + measure_height + 30, 80
    marks_top = dose_top + dose_height + 30
    height = marks_top + max(len(topics), 1) * 20 + 40
    parts = [_measure_panel(points, shades, x, measure_top, measure_height, measure_label),
             _dose_panel(doses, dose_max, x, dose_top, dose_height, dose_label),
             _marks_panel(marks, topics, x, marks_top),
             _day_axis(days, x, height - 22),
             *[_event_line(day, text, x, measure_top, height - 28) for day, text in events]]
    label = (f"Timeline of {days + 1} days: {measure_label}, {dose_label} and {len(marks)} decision(s) "
             f"in {len(topics)} topic(s)")
    return svg(width, height, label, *parts, css="chart timeline-chart")


def _measure_panel(points: Sequence[TimelinePoint], shades: Sequence[Shade], x: Scale, top: float, height: float,
                   label: str) -> Markup:
    peak = max([p.value for p in points] + [s.low for s in shades if s.low is not None] + [1.0])
    y = Scale(0, peak * 1.1, top + height, top)
    parts = [el("text", {"x": 4, "y": top + 12, "class": "panel-label"}, label)]
    for shade in shades:
        low = max(shade.low if shade.low is not None else 0, 0)
        high = min(shade.high if shade.high is not None else peak * 1.1, peak * 1.1)
        if high <= low:
            continue
        parts.append(el("g", {"class": f"shade band-{shade.colour}"},
                        el("rect", {"x": x.start, "y": y(high), "width": x.end - x.start, "height": y(low) - y(high)}),
                        el("text", {"x": x.end - 4, "y": y(high) + 12, "text_anchor": "end", "class": "shade-label"},
                           shade.label)))
    for tick in nice_ticks(0, peak * 1.1, 4):
        parts += [el("line", {"x1": x.start - 4, "x2": x.end, "y1": y(tick), "y2": y(tick), "class": "grid"}),
                  el("text", {"x": x.start - 8, "y": y(tick) + 4, "text_anchor": "end", "class": "tick"},
                     format_number(tick))]
    if points:
        path = " ".join(f"{x(p.day):.1f},{y(p.value):.1f}" for p in points)
        parts.append(el("polyline", {"points": path, "class": "measure-line"}))
        parts += [el("circle", {"cx": x(p.day), "cy": y(p.value), "r": 3, "class": "measure-point"},
                     el("title", {}, f"day {p.day} ({p.date.isoformat()}): {format_number(p.value)}"))
                  for p in points]
    else:
        parts.append(el("text", {"x": x.start + 8, "y": top + height / 2, "class": "empty"}, "no values"))
    return el("g", {"class": "panel measure"}, *parts)


def _dose_panel(doses: Sequence[float | None], dose_max: float | None, x: Scale, top: float, height: float,
                label: str) -> Markup:
    peak = max([d for d in doses if d is not None] + [dose_max or 0, 1.0])
    y = Scale(0, peak, top + height, top)
    parts = [el("text", {"x": 4, "y": top + 12, "class": "panel-label"}, label)]
    levels = sorted({d for d in doses if d is not None} | ({dose_max} if dose_max else set()))
    for level in [0.0, *levels]:
        parts += [el("line", {"x1": x.start - 4, "x2": x.end, "y1": y(level), "y2": y(level), "class": "grid"}),
                  el("text", {"x": x.start - 8, "y": y(level) + 4, "text_anchor": "end", "class": "tick"},
                     format_number(level))]
    if dose_max:
        parts.append(el("text", {"x": x.end - 4, "y": y(dose_max) - 3, "text_anchor": "end", "class": "limit"},
                        f"maximum {format_number(dose_max)}"))
    for day, dose in enumerate(doses):
        if dose is None:
            continue
        parts.append(el("rect", {"x": x(day), "y": y(dose), "width": max(x(day + 1) - x(day) - 0.5, 1),
                                 "height": y(0) - y(dose), "class": "dose-bar"},
                        el("title", {}, f"day {day}: {format_number(dose)}")))
    return el("g", {"class": "panel dose"}, *parts)


def _marks_panel(marks: Sequence[TimelineMark], topics: list[str], x: Scale, top: float) -> Markup:
    parts = [el("text", {"x": 4, "y": top - 8, "class": "panel-label"}, "decisions")]
    for index, topic in enumerate(topics):
        parts.append(el("text", {"x": x.start - 8, "y": top + index * 20 + 13, "text_anchor": "end",
                                 "class": "topic-label"}, topic))
    step = x(1) - x(0)
    for mark in marks:
        row = topics.index(mark.topic)
        parts.append(el("rect", {"x": x(mark.day) + 0.5, "y": top + row * 20 + 2, "width": max(step - 1, 2),
                                 "height": 15, "rx": 2, "class": f"mark indicator-{mark.indicator}",
                                 "data_day": mark.day, "data_topic": mark.topic},
                        el("title", {}, f"day {mark.day}: {mark.text}")))
    return el("g", {"class": "panel marks"}, *parts)


def _day_axis(days: int, x: Scale, y: float) -> Markup:
    parts = [el("line", {"x1": x.start, "x2": x.end, "y1": y, "y2": y, "class": "axis"})]
    for day in range(0, days + 1, 7 if days > 20 else 1):
        parts += [el("line", {"x1": x(day), "x2": x(day), "y1": y, "y2": y + 4, "class": "axis"}),
                  el("text", {"x": x(day), "y": y + 16, "text_anchor": "middle", "class": "tick"}, f"+{day}")]
    parts.append(el("text", {"x": 4, "y": y + 16, "class": "panel-label"}, "day"))
    return el("g", {"class": "axis-group"}, *parts)


def _event_line(day: int, text: str, x: Scale, top: float, bottom: float) -> Markup:
    """A dashed line on a day a suggestion was accepted; its label turns left near the right edge."""
    near_end = x(day) > x.start + (x.end - x.start) * 0.7
    return el("g", {"class": "event"},
              el("line", {"x1": x(day), "x2": x(day), "y1": top, "y2": bottom}),
              el("text", {"x": x(day) + (-3 if near_end else 3), "y": top - 8, "class": "event-label",
                          "text_anchor": "end" if near_end else "start"}, text))


# --- alert outcomes ------------------------------------------------------------------------------


OUTCOME_SERIES = ("accepted", "overridden", "no feedback")


def outcome_bars(rows: Sequence[tuple[str, dict[str, int]]], label: str, width: int = 960) -> Markup:
    """Stacked bars, one per row (a day or a topic): accepted, overridden and cards with no feedback."""
    if not rows:
        return svg(width, 40, label, el("text", {"x": 8, "y": 24, "class": "empty"}, "no cards in this period"))
    left, top, bar = 200, 24, 18
    height = top + len(rows) * (bar + 6) + 30
    peak = max(sum(counts.values()) for _, counts in rows) or 1
    x = Scale(0, peak, left, width - 200)
    parts = [_legend(left, 14)]
    for index, (name, counts) in enumerate(rows):
        y = top + index * (bar + 6)
        parts.append(el("text", {"x": left - 8, "y": y + 13, "text_anchor": "end", "class": "topic-label"}, name))
        start = 0
        for series in OUTCOME_SERIES:
            count = counts.get(series, 0)
            if count:
                parts.append(el("rect", {"x": x(start), "y": y, "width": x(start + count) - x(start), "height": bar,
                                         "class": f"outcome {series.replace(' ', '-')}"},
                                el("title", {}, f"{name}: {count} {series}")))
            start += count
        shown = sum(counts.values())
        rate = counts.get("overridden", 0) / shown if shown else 0
        parts.append(el("text", {"x": x(start) + 6, "y": y + 13, "class": "tick"},
                        f"{shown} shown, {rate:.0%} overridden"))
    return svg(width, height, label, *parts, css="chart outcome-chart")


def _legend(x: float, y: float) -> Markup:
    items = []
    for index, series in enumerate(OUTCOME_SERIES):
        items += [el("rect", {"x": x + index * 130, "y": y - 9, "width": 10, "height": 10,
                              "class": f"outcome {series.replace(' ', '-')}"}),
                  el("text", {"x": x + index * 130 + 14, "y": y, "class": "tick"}, series)]
    return el("g", {"class": "legend"}, *items)


def outcome_timeline(days: Sequence[tuple[dt.date, dict[str, int]]], label: str, width: int = 960) -> Markup:
    """Cards per day as stacked columns, so a rule that became noisy after a release shows as a change."""
    if not days:
        return svg(width, 40, label, el("text", {"x": 8, "y": 24, "class": "empty"}, "no cards in this period"))
    left, top, height = 50, 24, 200
    last = days[-1][0]
    first = min(days[0][0], last - dt.timedelta(days=13))  # at least two weeks, so one day is one column
    span = (last - first).days + 1
    x = Scale(0, span, left, width - 20)
    peak = max(sum(c.values()) for _, c in days) or 1
    y = Scale(0, peak * 1.1, top + height, top)
    parts = [_legend(left, 14)]
    for tick in nice_ticks(0, peak * 1.1, 4):
        parts += [el("line", {"x1": left, "x2": width - 20, "y1": y(tick), "y2": y(tick), "class": "grid"}),
                  el("text", {"x": left - 6, "y": y(tick) + 4, "text_anchor": "end", "class": "tick"},
                     format_number(tick))]
    column = max(x(1) - x(0) - 2, 2)
    for day, counts in days:
        offset, base = (day - first).days, 0
        for series in OUTCOME_SERIES:
            count = counts.get(series, 0)
            if count:
                parts.append(el("rect", {"x": x(offset) + 1, "y": y(base + count), "width": column,
                                         "height": y(base) - y(base + count),
                                         "class": f"outcome {series.replace(' ', '-')}"},
                                el("title", {}, f"{day.isoformat()}: {count} {series}")))
            base += count
    for offset in range(0, span, max(1, span // 8)):
        parts.append(el("text", {"x": x(offset) + column / 2, "y": top + height + 16, "text_anchor": "middle",
                                 "class": "tick"}, (first + dt.timedelta(days=offset)).isoformat()))
    return svg(width, top + height + 30, label, *parts, css="chart outcome-chart")


def shades_for(table: Table, ruleset: Ruleset | None) -> list[Shade]:
    """A table's rows as horizontal shades behind a measurement that is its input."""
    colours = _colours(table)
    return [Shade(b.low, b.high, f"{b.text}: {band_output(b, ruleset, table.output_unit)}",
                  colours[repr(b.output)]) for b in table.bands]

