"""One progress display for a whole run: stage, bar, done/total, ledger hits, rate and ETA.

The run reports through :class:`gcdbench.api.progress.Reporter`: stages ("round 1/2",
then "ask"), tasks (epochs, steps, encoding) and question batches (answered so far, how many
from the ledger). On a terminal this is one live ``rich`` display; elsewhere (a log file, CI)
it is plain lines: one when a stage begins, one when a question batch begins and ends, and
between them at most one update line every 30 s. ``-q`` prints nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from rich.console import Console, RenderableType
from rich.markup import escape
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
)
from rich.table import Column
from rich.text import Text

from gcdbench.api.progress import AnswerSink, Reporter

#: Seconds between two update lines on a non-terminal.
PLAIN_INTERVAL_S = 30.0
QUESTIONS = "questions"


def make_reporter(quiet: bool = False, console: Console | None = None) -> Reporter:
    """The reporter ``gcdbench run`` passes to a run: silent with ``-q``, else progress on
    stderr (live on a terminal, plain lines otherwise)."""
    if quiet:
        return Reporter()
    if console is None:
        from gcdbench.cli.common import err_console

        console = err_console
    return ProgressReporter(console)


@dataclass
class _Task:
    description: str
    total: int | None
    unit: str
    started: float
    done: int = 0
    hits: int = 0
    handle: TaskID | None = None
    stage: str = ""  # the stage it runs in, for its lines

    @property
    def title(self) -> str:
        return f"{self.stage}: {self.description}" if self.stage else self.description


@dataclass
class ProgressReporter(Reporter):
    """Tracks stages and open tasks and shows them on ``console``: live when the console is
    a terminal, as rate-limited plain lines when it is not. ``clock`` (seconds) is
    injectable so tests can check the rate limit."""

    console: Console
    clock: Callable[[], float] = time.monotonic
    interval: float = PLAIN_INTERVAL_S
    stages: list[str] = field(default_factory=list)
    tasks: list[_Task] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.view: _View = (
            _LiveView(self.console, self.clock)
            if self.console.is_terminal
            else _PlainView(self.console, self.clock, self.interval)
        )

    @property
    def label(self) -> str:
        return ": ".join(self.stages)

    def message(self, text: str) -> None:
        self.view.message(text)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        self.stages.append(name)
        self.view.staged(self.label)
        try:
            yield
        finally:
            self.stages.pop()
            self.view.staged(self.label, entered=False)
            self._idle_check()

    @contextmanager
    def task(self, description: str, total: int | None = None) -> Iterator[Callable[[int], None]]:
        with self._open(description, total, "it") as advance:

            def step(n: int = 1) -> None:
                advance(n, 0)

            yield step

    @contextmanager
    def questions(self, description: str, total: int) -> Iterator[AnswerSink]:
        with self._open(description, total, QUESTIONS) as advance:
            yield advance

    @contextmanager
    def _open(self, description: str, total: int | None, unit: str) -> Iterator[AnswerSink]:
        task = _Task(description, total, unit, self.clock(), stage=self.label)
        self.tasks.append(task)
        self.view.opened(task)

        def advance(done: int, hits: int = 0) -> None:
            task.done += done
            task.hits += hits
            self.view.advanced(task)

        try:
            yield advance
        finally:
            self.tasks.remove(task)
            self.view.closed(task)
            self._idle_check()

    def _idle_check(self) -> None:
        if not self.stages and not self.tasks:
            self.view.idle()


class _View:
    def message(self, text: str) -> None: ...
    def staged(self, label: str, entered: bool = True) -> None: ...
    def opened(self, task: _Task) -> None: ...
    def advanced(self, task: _Task) -> None: ...
    def closed(self, task: _Task) -> None: ...
    def idle(self) -> None: ...


def clock_text(seconds: float) -> str:
    """``m:ss`` or ``h:mm:ss``."""
    whole = max(0, round(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def rate_text(per_second: float | None, unit: str) -> str:
    """``0.4 s/question`` for slow work (LLM answers), ``12.5 it/s`` for fast."""
    if not per_second:
        return ""
    short = "q" if unit == QUESTIONS else unit
    return f"{per_second:.1f} {short}/s" if per_second >= 1 else f"{1 / per_second:.1f} s/{short}"


def counts_text(task: _Task) -> str:
    total = "?" if task.total is None else str(task.total)
    text = f"{task.done}/{total}"
    if task.unit == QUESTIONS:
        text += f" {QUESTIONS}"
        if task.hits:
            text += f", {task.hits} from ledger"
    return text


def summary_line(task: _Task, seconds: float) -> str:
    return f"{task.title}: {counts_text(task)}; took {clock_text(seconds)}"


class _PlainView(_View):
    """Lines for logs: stage starts, question batches begun and done, and between them at
    most one update per ``interval`` seconds (the innermost open task)."""

    def __init__(self, console: Console, clock: Callable[[], float], interval: float) -> None:
        self.console, self.clock, self.interval = console, clock, interval
        self.start = clock()
        self.last_update = self.start

    def _line(self, text: str) -> None:
        stamp = clock_text(self.clock() - self.start)
        # One line each, never re-wrapped: logs are read with grep.
        self.console.print(f"[{stamp}] {text}", markup=False, highlight=False, soft_wrap=True)

    def message(self, text: str) -> None:
        self._line(text)

    def staged(self, label: str, entered: bool = True) -> None:
        if entered:
            self._line(label)

    def opened(self, task: _Task) -> None:
        # Tasks outside any stage (pre-training, encoding) are stages of their own; question
        # batches say what is being asked, and how many, since they are the long waits.
        if not task.stage or task.unit == QUESTIONS:
            self._line(f"{task.title}: {counts_text(task)}")

    def advanced(self, task: _Task) -> None:
        now = self.clock()
        if now - self.last_update < self.interval:
            return
        self.last_update = now
        elapsed = now - task.started
        rate = task.done / elapsed if elapsed > 0 else None
        parts = [f"{task.title}: {counts_text(task)}"]
        if rate:
            parts.append(rate_text(rate, task.unit))
            if task.total is not None:
                parts.append(f"ETA {clock_text((task.total - task.done) / rate)}")
        self._line(", ".join(parts))

    def closed(self, task: _Task) -> None:
        if task.unit == QUESTIONS:
            self._line(summary_line(task, self.clock() - task.started))


class _TaskRows(ProgressColumn):
    """``column`` on task rows, nothing on the stage row."""

    def __init__(self, column: ProgressColumn) -> None:
        super().__init__(table_column=Column(no_wrap=True))
        self.column = column

    def render(self, task: Task) -> RenderableType:
        return Text("") if task.fields.get("is_stage") else self.column.render(task)


class _Counts(ProgressColumn):
    def render(self, task: Task) -> RenderableType:
        shown: _Task | None = task.fields.get("task")
        if shown is None:
            return Text("")
        # The row already names the question kind; the count stays short for 80 columns.
        text = f"{shown.done}/{'?' if shown.total is None else shown.total}"
        if shown.hits:
            text += f", {shown.hits} from ledger"
        return Text(text, style="progress.download")


class _Time(ProgressColumn):
    """Time in the stage on the stage row, the ETA on task rows."""

    def render(self, task: Task) -> RenderableType:
        if task.fields.get("is_stage"):
            return Text(clock_text(task.elapsed or 0.0), style="progress.elapsed")
        remaining = task.time_remaining
        eta = "ETA " + ("-:--" if remaining is None else clock_text(remaining))
        return Text(eta, style="progress.remaining")


class _Rate(ProgressColumn):
    def render(self, task: Task) -> RenderableType:
        shown: _Task | None = task.fields.get("task")
        return Text(rate_text(task.speed, shown.unit) if shown else "", style="progress.data.speed")


class _LiveView(_View):
    """One ``rich`` Progress for the run: a row for the stage, a row per open task. It is
    live while anything is open, and prints a line as each question batch ends."""

    def __init__(self, console: Console, clock: Callable[[], float]) -> None:
        self.console, self.clock = console, clock
        self.progress: Progress | None = None
        self.stage_row: TaskID | None = None

    def _ensure(self) -> Progress:
        if self.progress is None:
            self.progress = Progress(
                # Sized for 80 columns: the stage row shows its elapsed time, task rows a
                # bar, done/total, ledger hits, rate and ETA (progress.py's tests check it).
                TextColumn("{task.description}", table_column=Column(no_wrap=True)),
                _TaskRows(BarColumn(bar_width=12)),
                _Counts(table_column=Column(no_wrap=True)),
                _Rate(table_column=Column(no_wrap=True)),
                _Time(table_column=Column(no_wrap=True)),
                console=self.console,
                transient=True,
            )
            self.progress.start()
            self.stage_row = self.progress.add_task("", total=None, is_stage=True, visible=False)
        return self.progress

    def message(self, text: str) -> None:
        self.console.log(text)

    def staged(self, label: str, entered: bool = True) -> None:
        if not label and self.progress is None:
            return
        progress = self._ensure()
        assert self.stage_row is not None
        progress.update(self.stage_row, description=f"[bold]{escape(label)}", visible=bool(label))
        if entered:
            progress.reset(self.stage_row, total=None, visible=bool(label))

    def opened(self, task: _Task) -> None:
        progress = self._ensure()
        description = f"  {escape(task.description)}"
        task.handle = progress.add_task(description, total=task.total, task=task)

    def advanced(self, task: _Task) -> None:
        if self.progress is not None and task.handle is not None:
            self.progress.update(task.handle, completed=task.done)

    def closed(self, task: _Task) -> None:
        if self.progress is not None and task.handle is not None:
            self.progress.remove_task(task.handle)
        if task.unit == QUESTIONS:
            self.console.log(summary_line(task, self.clock() - task.started))

    def idle(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None
            self.stage_row = None
