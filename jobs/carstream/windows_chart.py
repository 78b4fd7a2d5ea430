"""A picture of the alert windows: the latest value of each window of `alert-counts`, as a PNG.

One stacked bar per window, at its start time: its alerts split by color family
(num_of_<family>; the families found in the values, or given) plus "other colors" for the rest
of num_of_rows when there is a rest. The window's maximum speed is a line on a second y-axis.
Times are UTC. The file is replaced atomically (a temporary file in the same folder, then
os.replace), so a viewer never sees a half-written picture.

`carstream report` draws it from the topic; `WindowChartWriter` redraws it as the count
stage's micro-batches arrive, at most every few seconds. matplotlib draws with its Agg backend
on a Figure of its own (no pyplot, no display), imported on the first drawing only, so that
commands drawing nothing start as fast as before.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.figure import Figure

LOG = logging.getLogger(__name__)
FAMILY_PREFIX = "num_of_"
ROWS = "num_of_rows"
DEFAULT_TITLE = "Alerts per window"
OTHER_LABEL = "other colors"
SPEED_LABEL = "maximum speed"
FIGURE_SIZE = (12.0, 6.0)
TITLE_WIDTH = 90
"""Characters per line of the title (a long topic name wraps)."""
DPI = 100
_BACKGROUND = "#e6ebf2"  # light enough for black bars, dark enough for white ones
_FAMILY_COLORS = ("#4c72b0", "#55a868", "#8172b2", "#ccb974", "#64b5cd", "#937860")
_OTHER_COLOR = "#dd8452"
_SPEED_COLOR = "#c44e52"
_EDGE_COLOR = "#4a4a4a"
_DENSE = 120
"""From this many windows on, bars touch and have no edges: they read as a stacked area."""


def _instant(value: datetime | str) -> datetime:
    """A window bound as an aware UTC datetime. Text is an ISO instant (without an offset:
    UTC); a naive datetime is local time, as PySpark's collect() returns timestamps."""
    if isinstance(value, str):
        parsed = datetime.fromisoformat(value)
        return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    if isinstance(value, datetime):
        return value.astimezone(UTC)
    raise TypeError(f"{value!r} is not a time")


@dataclass(frozen=True)
class Window:
    """The counts of one window."""

    start: datetime
    end: datetime
    rows: int
    families: Mapping[str, int]
    maximum_speed: float | None

    @classmethod
    def from_mapping(cls, value: Mapping[str, Any]) -> Window:
        """From a value of alert-counts (parsed JSON) or a row of the count stage as a dict."""
        families = {
            key.removeprefix(FAMILY_PREFIX): int(count)
            for key, count in value.items()
            if key.startswith(FAMILY_PREFIX) and key != ROWS
        }
        speed = value.get("maximum_speed")
        return cls(
            start=_instant(value["window_start"]),
            end=_instant(value["window_end"]),
            rows=int(value[ROWS]),
            families=families,
            maximum_speed=None if speed is None else float(speed),
        )

    def other(self, families: Iterable[str]) -> int:
        """Alerts of no family among `families` (0 when families overlap and count more)."""
        return max(0, self.rows - sum(self.families.get(name, 0) for name in families))


class WindowCounts:
    """The latest value of each window, by window start: what a compacted alert-counts keeps."""

    def __init__(self) -> None:
        self._windows: dict[datetime, Window] = {}
        self.skipped = 0
        """Values of `from_messages` that were not a window's JSON."""

    def update(self, rows: Iterable[Mapping[str, Any]]) -> None:
        """Each row replaces the earlier value of its window."""
        for row in rows:
            window = Window.from_mapping(row)
            self._windows[window.start] = window

    @classmethod
    def from_messages(cls, values: Iterable[bytes | str | None]) -> WindowCounts:
        """From alert-counts values in the order of their partitions (the versions of a window
        share its key, hence its partition). Null values (tombstones) carry no window."""
        counts = cls()
        for value in values:
            if value is None:
                continue
            try:
                parsed = json.loads(value)
                if not isinstance(parsed, dict):
                    raise TypeError("not an object")
                counts.update([parsed])
            except (ValueError, TypeError, KeyError):
                counts.skipped += 1
        return counts

    def __len__(self) -> int:
        return len(self._windows)

    def windows(self) -> list[Window]:
        """The windows, by start."""
        return [self._windows[start] for start in sorted(self._windows)]

    def families(self) -> list[str]:
        """The color families of the windows, in the order they first appear."""
        return list(dict.fromkeys(name for window in self.windows() for name in window.families))


@dataclass(frozen=True)
class ChartSummary:
    """What a drawing shows."""

    windows: int
    families: tuple[str, ...]
    first_start: datetime | None
    last_end: datetime | None
    newest: Window | None
    """The window that starts last."""

    def line(self) -> str:
        """One line: how many windows, the time they cover, the alerts of the newest."""
        if self.newest is None or self.first_start is None or self.last_end is None:
            return "no windows"
        plural = "window" if self.windows == 1 else "windows"
        return (
            f"{self.windows} {plural} from {self.first_start:%Y-%m-%d %H:%M:%S} to "
            f"{self.last_end:%Y-%m-%d %H:%M:%S} UTC; the newest window "
            f"({self.newest.start:%H:%M:%S}-{self.newest.end:%H:%M:%S}) holds "
            f"{self.newest.rows} alerts"
        )


def summarize(counts: WindowCounts, families: Sequence[str] | None = None) -> ChartSummary:
    """What `draw` shows of `counts`: `families` first (in that order), then any others found."""
    windows = counts.windows()
    return ChartSummary(
        windows=len(windows),
        families=tuple(dict.fromkeys([*(families or ()), *counts.families()])),
        first_start=windows[0].start if windows else None,
        last_end=max((window.end for window in windows), default=None),
        newest=windows[-1] if windows else None,
    )


def draw(
    counts: WindowCounts,
    path: str | os.PathLike[str],
    *,
    families: Sequence[str] | None = None,
    title: str = DEFAULT_TITLE,
) -> ChartSummary:
    """Writes the PNG of `counts` to `path` (its folder is created); returns what it shows."""
    summary = summarize(counts, families)
    figure = _figure(counts.windows(), summary, title)
    _write_atomically(figure, Path(path))
    return summary


def _clock(moment: datetime) -> str:
    return f"{moment:%H:%M}" if moment.second == moment.microsecond == 0 else f"{moment:%H:%M:%S}"


def _time_range(summary: ChartSummary) -> str:
    first, last = summary.first_start, summary.last_end
    if first is None or last is None:
        return "no windows yet"
    end = _clock(last) if first.date() == last.date() else f"{last:%Y-%m-%d} {_clock(last)}"
    plural = "window" if summary.windows == 1 else "windows"
    return f"{summary.windows} {plural}, {first:%Y-%m-%d} {_clock(first)} to {end} UTC"


def _duration(length: timedelta) -> str:
    seconds = int(length.total_seconds())
    if seconds % 3600 == 0:
        return f"{seconds // 3600} h"
    if seconds % 60 == 0:
        return f"{seconds // 60} min"
    return f"{seconds} s"


def _family_color(name: str, index: int) -> str:
    """A family named after a color is drawn in it; others take the palette in turn."""
    from matplotlib.colors import is_color_like

    return name if is_color_like(name) else _FAMILY_COLORS[index % len(_FAMILY_COLORS)]


def _figure(windows: Sequence[Window], summary: ChartSummary, title: str) -> Figure:
    from matplotlib import dates, ticker
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=FIGURE_SIZE, dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    axes.set_facecolor(_BACKGROUND)
    axes.grid(axis="y", color="white", linewidth=1.0)
    axes.set_axisbelow(True)
    heading = textwrap.fill(title, TITLE_WIDTH, break_on_hyphens=False)
    axes.set_title(f"{heading}\n{_time_range(summary)}", fontsize=12)
    axes.set_ylabel("alerts in the window")
    if not windows:
        axes.set_xlabel("window start (UTC)")
        axes.set_xticks([])
        axes.set_yticks([])
        axes.text(
            0.5,
            0.5,
            "no alert windows yet: the count stage writes one when an alert comes",
            ha="center",
            va="center",
            fontsize=12,
            transform=axes.transAxes,
        )
        return figure
    starts = dates.date2num([window.start for window in windows])
    axes.yaxis.set_major_locator(ticker.MaxNLocator(integer=True))
    # A few windows: a tick at each start; more: round times.
    locator: ticker.Locator = (
        ticker.FixedLocator(starts) if len(windows) <= 12 else dates.AutoDateLocator(tz=UTC)
    )
    axes.xaxis.set_major_locator(locator)
    axes.xaxis.set_major_formatter(dates.ConciseDateFormatter(locator, tz=UTC))
    slide = min((b.start - a.start for a, b in pairwise(windows)), default=None)
    length = windows[-1].end - windows[-1].start
    dense = len(windows) >= _DENSE
    width = (slide or length) / timedelta(days=1) * (1.0 if dense else 0.8)  # dates are days
    axes.set_xlabel(f"window start (UTC); each window is {_duration(length)} long")

    stacks = [
        (name, [window.families.get(name, 0) for window in windows], _family_color(name, index))
        for index, name in enumerate(summary.families)
    ]
    other = [window.other(summary.families) for window in windows]
    if any(other):
        stacks.append((OTHER_LABEL, other, _OTHER_COLOR))
    bottom = [0] * len(windows)
    for label, heights, color in stacks:
        axes.bar(
            starts,
            heights,
            width,
            bottom=bottom,
            label=label,
            color=color,
            edgecolor=_EDGE_COLOR,
            linewidth=0.0 if dense else 0.6,
            antialiased=not dense,  # touching antialiased bars show hairline gaps
        )
        bottom = [below + height for below, height in zip(bottom, heights, strict=True)]
    axes.set_ylim(0, max(max(bottom), 1) * 1.1)

    speed_axes = axes.twinx()
    speeds = [float("nan") if w.maximum_speed is None else w.maximum_speed for w in windows]
    speed_axes.plot(
        starts,
        speeds,
        color=_SPEED_COLOR,
        linewidth=2,
        marker="o" if len(windows) <= 60 else None,
        markersize=4,
        label=f"{SPEED_LABEL} (right axis)",
    )
    top_speed = max((s for w in windows if (s := w.maximum_speed) is not None), default=0.0)
    speed_axes.set_ylim(0, max(top_speed, 1.0) * 1.1)
    speed_axes.set_ylabel(SPEED_LABEL, color=_SPEED_COLOR)
    speed_axes.tick_params(axis="y", colors=_SPEED_COLOR)

    handles, labels = axes.get_legend_handles_labels()
    speed_handles, speed_labels = speed_axes.get_legend_handles_labels()
    # The stacks from the top one down, as they appear on the bars; the line last.
    legend = figure.legend(
        [*handles[::-1], *speed_handles],
        [*labels[::-1], *speed_labels],
        loc="outside right upper",
    )
    for patch in legend.get_patches():  # a white family needs its edge, even without the bars'
        patch.set_linewidth(0.6)
    return figure


def _write_atomically(figure: Figure, path: Path) -> None:
    """Saves `figure` as PNG next to `path`, then renames it over `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            figure.savefig(file, format="png")
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


class WindowChartWriter:
    """Keeps the windows of the micro-batches given to `add` and redraws the PNG at `path`:
    on the first batch, then at most every `min_interval_seconds`, and a last time on
    `close()`. A failure to draw is logged, never raised: the pipeline goes on without it.

    For `carstream run`: `add` the rows of each micro-batch of the count stage as mappings
    (`row.asDict()` of a Spark Row), `close()` once the streams have stopped. `add(())` draws
    what is still pending once it is due. `add` may come from Spark's foreachBatch thread
    while `close` comes from another.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        families: Sequence[str] | None = None,
        min_interval_seconds: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        title: str = DEFAULT_TITLE,
    ) -> None:
        self.path = Path(path)
        self.families = list(families) if families is not None else None
        self.min_interval_seconds = min_interval_seconds
        self.title = title
        self.counts = WindowCounts()
        self.summary: ChartSummary | None = None
        """What the last picture written shows (None before the first)."""
        self._clock = clock
        self._lock = threading.Lock()
        self._drawn_at: float | None = None
        self._pending = False

    def add(self, rows: Iterable[Mapping[str, Any]]) -> None:
        """Takes a micro-batch's windows; redraws if the last drawing is old enough."""
        with self._lock:
            try:
                for row in rows:
                    self.counts.update([row])
                    self._pending = True
            except Exception:
                LOG.exception("alert windows chart: a row is not a window")
            now = self._clock()
            due = self._drawn_at is None or now - self._drawn_at >= self.min_interval_seconds
            if self._pending and due:
                self._draw(now)

    def close(self) -> None:
        """Draws what is pending (or an empty chart when nothing ever came)."""
        with self._lock:
            if self._pending or self._drawn_at is None:
                self._draw(self._clock())

    def _draw(self, now: float) -> None:
        self._drawn_at = now
        try:
            self.summary = draw(self.counts, self.path, families=self.families, title=self.title)
        except Exception:
            LOG.exception("alert windows chart: could not draw %s", self.path)
        else:
            self._pending = False
