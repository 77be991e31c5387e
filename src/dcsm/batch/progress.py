"""The progress bar: images done, images per second and the time left (tqdm).

On a terminal the bar redraws in place; otherwise (a log file, torchrun's pipes) it is off and,
unless switched off too, a plain status line is printed every ``log_every`` seconds instead.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

from tqdm import tqdm

BAR_FORMAT = ("{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} "
              "[{elapsed}<{remaining}, {rate_noinv_fmt}{postfix}]")


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


class Progress:
    """Progress over ``total`` images.

    ``enabled``: True for the bar, False for nothing, None for the bar on a terminal and the
    periodic status lines elsewhere.
    """

    def __init__(self, total: int, desc: str, enabled: bool | None = None,
                 stream: TextIO | None = None, log_every: float = 60.0) -> None:
        self.stream = stream or sys.stderr
        self.total = total
        self.desc = desc
        self.failed = 0
        self.done = 0
        tty = self.stream.isatty()
        self.log_every = log_every if enabled is None and not tty else None
        self.start = self.last_log = time.monotonic()
        self.bar = tqdm(total=total, desc=desc, unit="img", bar_format=BAR_FORMAT,
                        file=self.stream, dynamic_ncols=True, smoothing=0.1,
                        disable=(not tty) if enabled is None else not enabled)

    def step(self, failed: bool = False) -> None:
        """One image finished (or failed)."""
        self.done += 1
        if failed:
            self.failed += 1
            self.bar.set_postfix_str(f"{self.failed} failed", refresh=False)
        self.bar.update(1)
        now = time.monotonic()
        if self.log_every is not None and now - self.last_log >= self.log_every:
            self.last_log = now
            rate = self.done / max(now - self.start, 1e-9)
            left = (self.total - self.done) / rate if rate > 0 else 0.0
            print(f"{self.desc}: {self.done}/{self.total} images, {rate:.2f} img/s, "
                  f"{_duration(left)} left, {self.failed} failed", file=self.stream, flush=True)

    def message(self, text: str) -> None:
        """A line above the bar (or just the line when the bar is off)."""
        if self.bar.disable:
            print(text, file=self.stream, flush=True)
        else:
            self.bar.write(text, file=self.stream)

    def close(self) -> None:
        """Finish the bar's line."""
        self.bar.close()
