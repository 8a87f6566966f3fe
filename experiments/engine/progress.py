"""One line of progress for a whole experiment (all its child runs).

`ExperimentProgress` shows `run i/N <name>`, step / total, elapsed time, ETA
of the whole experiment, the latest train loss and eval metric:

- `bar`: a live `tqdm` bar (carriage returns) on stderr, for terminals;
- `lines`: a plain line every `every_fraction` of the experiment or every
  `every_s` seconds (whichever comes first) plus one per finished run, no
  carriage returns, for CI logs, `tee` and pipes;
- `auto`: `bar` when stderr is a terminal, else `lines`;
- `none`: nothing (tests, non-chief workers).

Keras' `Progbar` (what `fit(verbose=1)` shows) was considered: it counts
one run's steps only and its non-terminal mode prints at every epoch end,
not every few percent; `tqdm` (already installed with our dependencies)
gives the bar and its time formatting, and the plain lines are ours.

The engine keeps one instance per process (`start` / `current`); the
`StepLogger` callback feeds it.
"""

import os
import sys
import time

from tqdm import tqdm

MODES = ("auto", "bar", "lines", "none")

_CURRENT = [None]


def _fmt_time(seconds):
    return tqdm.format_interval(max(0.0, seconds))


def _width(stream):
    try:
        return os.get_terminal_size(stream.fileno()).columns
    except (AttributeError, OSError, ValueError):
        return 0


def _fmt_value(value):
    return f"{value:.4g}"


class ExperimentProgress:
    """Progress of `len(steps)` runs of `steps[i]` optimizer steps each.

    Args:
        name: the experiment name (line prefix).
        steps: list of total steps per run (one entry for a single run).
        mode: one of `MODES`.
        stream: where to write (default `sys.stderr`).
        every_fraction: `lines` mode: a line every this fraction of the
            whole experiment's steps.
        every_s: `lines` mode: a line at least every this many seconds
            (checked when the training loop reports, once per execution).
        clock: a `time.monotonic`-like function (tests).
        unit: what is counted (`step`; `images` for evaluation).

    Raises:
        ValueError: `mode` is not one of `MODES`.
    """

    def __init__(
        self,
        name,
        steps,
        mode="auto",
        stream=None,
        every_fraction=0.05,
        every_s=60.0,
        clock=time.monotonic,
        unit="step",
    ):
        mode = getattr(mode, "value", mode)
        if mode not in MODES:
            raise ValueError(
                f"progress mode must be one of {MODES}; set "
                f"trainer.progress accordingly. Received: {mode!r}"
            )
        self.stream = stream or sys.stderr
        if mode == "auto":
            tty = getattr(self.stream, "isatty", lambda: False)()
            mode = "bar" if tty else "lines"
        self.mode = mode
        self.name = name
        self.unit = unit
        self.steps = [int(s) for s in steps]
        self.total = sum(self.steps)
        self.every_fraction = every_fraction
        self.every_s = every_s
        self.clock = clock
        self.start_time = clock()
        self.index = 0
        self.run_name = ""
        self.step = 0
        self.loss = None
        self.metric = None  # (name, value)
        self._trained = 0  # steps trained in this process (for the rate)
        self._run_start_step = 0
        self._next_line_fraction = every_fraction
        self._last_line_time = self.start_time
        self._bar = None

    # --- state ---------------------------------------------------------

    def _done(self):
        return sum(self.steps[: max(self.index - 1, 0)]) + self.step

    def eta_s(self):
        """Seconds left for the whole experiment (None before any step)."""
        elapsed = self.clock() - self.start_time
        if self._trained <= 0 or elapsed <= 0:
            return None
        return (self.total - self._done()) * elapsed / self._trained

    def line(self):
        """The one line of state, e.g. `bn_mnist | run 2/6 bn-seed0 | ...`."""
        n = len(self.steps)
        run_steps = self.steps[self.index - 1] if self.index else 0
        pct = 100.0 * self._done() / self.total if self.total else 100.0
        eta = self.eta_s()
        if n > 1:
            run = f"run {self.index}/{n} {self.run_name}".rstrip()
        else:
            run = "" if self.run_name == self.name else self.run_name
        parts = [
            self.name,
            *([run] if run else []),
            f"{self.unit} {self.step}/{run_steps}",
            f"{pct:.0f}%",
            f"elapsed {_fmt_time(self.clock() - self.start_time)}",
            f"ETA {'?' if eta is None else _fmt_time(eta)}",
        ]
        if self.loss is not None:
            parts.append(f"loss {_fmt_value(self.loss)}")
        if self.metric is not None:
            parts.append(f"{self.metric[0]} {_fmt_value(self.metric[1])}")
        return " | ".join(parts)

    # --- events --------------------------------------------------------

    def begin_run(self, index, name, start_step=0):
        """Run `index` (1-based) named `name` starts (or resumes) here."""
        self.index, self.run_name = index, name
        self.step = self._run_start_step = int(start_step)
        self.loss = self.metric = None
        if self.mode == "bar":
            if self._bar is None:
                self._bar = tqdm(
                    total=self.total,
                    initial=self._done(),
                    file=self.stream,
                    unit=self.unit,
                    # A terminal of unknown width (0, e.g. under `script`)
                    # would get an empty bar.
                    dynamic_ncols=_width(self.stream) > 0,
                    ncols=None if _width(self.stream) > 0 else 100,
                    bar_format="{desc} {percentage:3.0f}%|{bar}| "
                    "{n_fmt}/{total_fmt} [{elapsed}<{remaining}]{postfix}",
                )
            else:
                self._bar.update(self._done() - self._bar.n)
            runs = len(self.steps)
            self._bar.set_description_str(
                f"{self.name} run {index}/{runs} {name}" if runs > 1 else name
            )
        elif self.mode == "lines" and 0 < start_step < self.steps[index - 1]:
            self._write(f"{self.line()} | resumed")

    def update(self, step, loss=None, metric=None):
        """The current run reached `step`; `metric` is `(name, value)`."""
        step = int(step)
        self._trained += max(0, step - self.step)
        self.step = step
        if loss is not None:
            self.loss = float(loss)
        if metric is not None:
            self.metric = (metric[0], float(metric[1]))
        if self.mode == "bar" and self._bar is not None:
            self._bar.update(self._done() - self._bar.n)
            post = []
            if self.loss is not None:
                post.append(f"loss {_fmt_value(self.loss)}")
            if self.metric is not None:
                post.append(f"{self.metric[0]} {_fmt_value(self.metric[1])}")
            self._bar.set_postfix_str(", ".join(post), refresh=True)
        elif self.mode == "lines" and step < self.steps[self.index - 1]:
            # (the run's last step: `end_run` writes its line)
            fraction = self._done() / self.total if self.total else 1.0
            now = self.clock()
            if (
                fraction >= self._next_line_fraction
                or now - self._last_line_time >= self.every_s
            ):
                self._write(self.line())
                while self._next_line_fraction <= fraction:
                    self._next_line_fraction += self.every_fraction

    def end_run(self, status="FINISHED", skipped=False):
        """The current run ended; `lines` mode writes one line for it."""
        if self.index:
            self.step = self.steps[self.index - 1]
        if self.mode == "lines":
            word = "skipped (finished before)" if skipped else status.lower()
            self._write(f"{self.line()} | {word}")
        elif self.mode == "bar" and self._bar is not None:
            self._bar.update(self._done() - self._bar.n)

    def close(self):
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def _write(self, text):
        self._last_line_time = self.clock()
        self.stream.write(text + "\n")
        self.stream.flush()


def start(name, steps, mode="auto", **kwargs):
    """Makes the process's current `ExperimentProgress` and returns it."""
    close()
    _CURRENT[0] = ExperimentProgress(name, steps, mode, **kwargs)
    return _CURRENT[0]


def current():
    """The current `ExperimentProgress`, or None."""
    return _CURRENT[0]


def close():
    if _CURRENT[0] is not None:
        _CURRENT[0].close()
        _CURRENT[0] = None
