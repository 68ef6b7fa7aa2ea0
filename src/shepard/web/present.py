"""How views look on a page: the throughput chart (inline SVG, no script), durations, sizes and
the work item of a job. Pure functions; the templates call them as filters."""

from __future__ import annotations

from collections.abc import Sequence

from markupsafe import Markup, escape

from shepard.views import JobView, MinuteView

WIDTH, HEIGHT, PAD = 640, 180, 28


def work_item(job: JobView) -> str:
    """What a person calls the job: its NAME parameter (any case) when it has one, else its
    first parameter as KEY=VALUE, else its bundle's name."""
    for key, value in job.params.items():
        if key.upper() == "NAME":
            return str(value)
    for key, value in job.params.items():
        return f"{key}={value}"
    return job.bundle or job.id


def duration(seconds: float | None) -> str:
    """`42 s`, `3 min 5 s`, `2 h 7 min`; an em dash for None."""
    if seconds is None:
        return "—"
    s = max(0, round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60} s"
    if s < 86400:
        return f"{s // 3600} h {s % 3600 // 60} min"
    return f"{s // 86400} d {s % 86400 // 3600} h"


def size(n: int) -> str:
    step = 1024.0
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < step or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= step
    return f"{n} B"


def chart(minutes: Sequence[MinuteView]) -> Markup:
    """Stacked bars (succeeded below, failed above) of jobs ended per minute, as SVG with a
    text description for screen readers."""
    count = max(len(minutes), 1)
    top = max([m.succeeded + m.failed for m in minutes] + [1])
    inner_w, inner_h = WIDTH - 2 * PAD, HEIGHT - 2 * PAD
    bar = inner_w / count
    total_ok = sum(m.succeeded for m in minutes)
    total_bad = sum(m.failed for m in minutes)
    title = (
        f"Jobs ended per minute over the last {len(minutes)} minutes: "
        f"{total_ok} succeeded, {total_bad} failed; busiest minute {top}."
    )
    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-labelledby="chart-title" preserveAspectRatio="none">',
        f'<title id="chart-title">{escape(title)}</title>',
        f'<line class="axis" x1="{PAD}" y1="{HEIGHT - PAD}" x2="{WIDTH - PAD}" '
        f'y2="{HEIGHT - PAD}"/>',
        f'<text class="label" x="{PAD - 4}" y="{PAD + 4}" text-anchor="end">{top}</text>',
        f'<text class="label" x="{PAD - 4}" y="{HEIGHT - PAD}" text-anchor="end">0</text>',
    ]
    for i, m in enumerate(minutes):
        x = PAD + i * bar
        ok_h = inner_h * m.succeeded / top
        bad_h = inner_h * m.failed / top
        y_ok = HEIGHT - PAD - ok_h
        tip = f"{m.time[11:16]} UTC: {m.succeeded} succeeded, {m.failed} failed"
        parts.append(f"<g><title>{escape(tip)}</title>")
        if m.succeeded:
            parts.append(
                f'<rect class="ok" x="{x:.1f}" y="{y_ok:.1f}" width="{max(bar - 1, 1):.1f}" '
                f'height="{ok_h:.1f}"/>'
            )
        if m.failed:
            parts.append(
                f'<rect class="bad" x="{x:.1f}" y="{y_ok - bad_h:.1f}" '
                f'width="{max(bar - 1, 1):.1f}" height="{bad_h:.1f}"/>'
            )
        parts.append("</g>")
    if minutes:
        first, last = minutes[0].time[11:16], minutes[-1].time[11:16]
        parts.append(
            f'<text class="label" x="{PAD}" y="{HEIGHT - 8}">{escape(first)} UTC</text>'
            f'<text class="label" x="{WIDTH - PAD}" y="{HEIGHT - 8}" text-anchor="end">'
            f"{escape(last)}</text>"
        )
    parts.append("</svg>")
    return Markup("".join(parts))
