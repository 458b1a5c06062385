"""A tiny, dependency-free progress bar (the package needs only NumPy, so no tqdm).

    with Progress(total=len(loader), desc="train", unit="batch") as bar:
        for xb, yb in loader:
            ...
            bar.update(loss=0.312, acc=0.941)

prints, on a terminal, one line redrawn in place::

    train  45/100  45%|#########...........| 00:12<00:15  3.71 batch/s  loss=0.312 acc=0.941

On a terminal the line is redrawn with ``\\r`` at most about 10 times a second. When the output
is not a terminal (CI logs, pipes, files) a full line is printed only each time another ~10 % is
done, so logs stay short. ``disable=True`` prints nothing.
"""
from __future__ import annotations

import sys
import time
from typing import Iterable, Iterator, TextIO, TypeVar

T = TypeVar("T")

BAR_WIDTH = 20
TTY_MIN_INTERVAL = 0.1  # seconds between redraws in place: ~10 redraws/s at most
LOG_STEP = 0.10  # not a TTY: one line per 10 % of the total
LOG_INTERVAL_UNKNOWN_TOTAL = 10.0  # not a TTY and no total: one line every 10 s


def format_time(seconds: float) -> str:
    """``75.2`` -> ``"01:15"``; ``3725`` -> ``"1:02:05"``; unknown -> ``"?"``."""
    if seconds is None or seconds != seconds or seconds == float("inf"):
        return "?"
    s = int(round(seconds))
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


def format_value(value) -> str:
    """Postfix values: floats with 3 decimals (``0.312``), tiny ones in e-notation, ints as-is."""
    kind = getattr(getattr(value, "dtype", None), "kind", None)  # NumPy/CuPy scalars
    if isinstance(value, bool) or kind == "b":
        return str(value)
    if isinstance(value, int) or kind in ("i", "u"):
        return str(int(value))
    try:
        v = float(value)
    except (TypeError, ValueError):
        return str(value)
    if v != 0.0 and abs(v) < 1e-3:
        return f"{v:.2e}"
    return f"{v:.3f}"


def format_rate(rate: float, unit: str) -> str:
    """``3.712`` -> ``"3.71 batch/s"``; slow ones as seconds per step (``"2.50 s/batch"``)."""
    if rate <= 0:
        return f"? {unit}/s"
    if rate < 1:
        return f"{1 / rate:.2f} s/{unit}"
    digits = 0 if rate >= 100 else 1 if rate >= 10 else 2
    return f"{rate:.{digits}f} {unit}/s"


def _is_tty(file) -> bool:
    try:
        return bool(file.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed file
        return False


class Progress:
    """A progress bar over ``total`` steps.

    Args:
        total: number of steps, or None when unknown (then no percent, bar or ETA).
        desc: short label at the start of the line, e.g. ``"train"``.
        unit: what one step is, shown in the rate (``"batch/s"``).
        file: where to write; default ``sys.stderr`` (looked up when the bar is made).
        disable: print nothing at all.
        tty: force the terminal (True) or log (False) style; default: ``file.isatty()``.
    """

    def __init__(self, total: int | None = None, desc: str = "", unit: str = "it",
                 file: TextIO | None = None, disable: bool = False, tty: bool | None = None):
        self.total = None if total is None else int(total)
        self.desc = desc
        self.unit = unit
        self.file = sys.stderr if file is None else file
        self.disable = disable
        self.tty = _is_tty(self.file) if tty is None else tty
        self.n = 0
        self.postfix: dict = {}
        self.closed = False
        self._start = time.monotonic()
        self._last_draw = -float("inf")
        self._last_width = 0
        self._next_log_step = 1  # not a TTY: print when n reaches this many tenths of total
        self._logged_n = -1  # n at the last printed line, to avoid printing 100 % twice

    # ------------------------------------------------------------------ public API
    def update(self, n: int = 1, **postfix) -> None:
        """Advance by ``n`` steps; keyword values (e.g. ``loss=0.31``) are shown after the bar."""
        if self.closed:
            return
        self.n += n
        if postfix:
            self.postfix.update(postfix)
        if self.disable:
            return
        if self.tty:
            now = time.monotonic()
            done = self.total is not None and self.n >= self.total
            if done or now - self._last_draw >= TTY_MIN_INTERVAL:
                self._redraw(now)
        else:
            self._maybe_log()

    def set_postfix(self, **postfix) -> None:
        """Change the values shown after the bar without advancing."""
        self.postfix.update(postfix)

    def write(self, message: str) -> None:
        """Print ``message`` on its own line without garbling the bar."""
        if self.disable:
            return
        if self.tty and self._last_width:
            self.file.write("\r" + " " * self._last_width + "\r")
        self.file.write(message + "\n")
        if self.tty and self._last_width:
            self._redraw(time.monotonic())
        self.file.flush()

    def close(self) -> None:
        """Draw the final state and end the line. Calling it twice is harmless."""
        if self.closed:
            return
        self.closed = True
        if self.disable:
            return
        if self.tty:
            self._redraw(time.monotonic())
            self.file.write("\n")
            self.file.flush()
        elif self._logged_n != self.n:
            self._print_line()

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ rendering
    def format_line(self, now: float | None = None) -> str:
        """The status line, e.g. ``train  45/100 45%|#####.....| 00:12<00:15 3.71 batch/s``."""
        now = time.monotonic() if now is None else now
        elapsed = max(now - self._start, 0.0)
        rate = self.n / elapsed if elapsed > 0 else 0.0
        parts = []
        if self.total:
            frac = min(self.n / self.total, 1.0)
            filled = int(frac * BAR_WIDTH)
            bar = "#" * filled + "." * (BAR_WIDTH - filled)
            eta = (self.total - self.n) / rate if rate > 0 else None
            parts.append(f"{self.n}/{self.total} {frac * 100:.0f}%|{bar}|")
            parts.append(f"{format_time(elapsed)}<{format_time(eta)}")
        else:
            parts.append(f"{self.n} {self.unit}")
            parts.append(format_time(elapsed))
        parts.append(format_rate(rate, self.unit))
        if self.postfix:
            parts.append(" ".join(f"{k}={format_value(v)}" for k, v in self.postfix.items()))
        line = " ".join(parts)
        return f"{self.desc}  {line}" if self.desc else line

    def _redraw(self, now: float) -> None:
        line = self.format_line(now)
        # Pad with spaces so a shorter line fully covers the previous one.
        pad = " " * max(self._last_width - len(line), 0)
        self.file.write("\r" + line + pad)
        self.file.flush()
        self._last_width = len(line)
        self._last_draw = now

    def _maybe_log(self) -> None:
        if self.total:
            # Print once for each 10 % boundary crossed (a big update prints just once).
            step = int(self.n / self.total / LOG_STEP + 1e-9)
            if step >= self._next_log_step:
                self._next_log_step = step + 1
                self._print_line()
        elif time.monotonic() - self._last_draw >= LOG_INTERVAL_UNKNOWN_TOTAL:
            self._print_line()

    def _print_line(self) -> None:
        now = time.monotonic()
        self.file.write(self.format_line(now) + "\n")
        self.file.flush()
        self._last_draw = now
        self._logged_n = self.n


def iterate(iterable: Iterable[T], total: int | None = None, desc: str = "", unit: str = "it",
            file: TextIO | None = None, disable: bool = False) -> Iterator[T]:
    """Yield from ``iterable`` while showing a bar; ``total`` defaults to ``len(iterable)``."""
    if total is None:
        try:
            total = len(iterable)  # type: ignore[arg-type]
        except TypeError:
            total = None
    bar = Progress(total, desc=desc, unit=unit, file=file, disable=disable)
    try:
        for item in iterable:
            yield item
            bar.update()
    finally:
        bar.close()
