r"""Progress reports a person can read, in a terminal and in a log file alike.

In a terminal, tqdm's bars redraw in place. Outside one (``dvc repro > log``, a CI job, a
Kubeflow pod), each redraw would be one more chunk of ``\\r``-separated text in the log, so
there :class:`tqdm` prints a whole line at most every :data:`LOG_INTERVAL_S` seconds (and one
when the loop ends), and Keras training prints one line per epoch (:func:`epoch_callback`).
``OASIS_VQVAE_PROGRESS=bars`` or ``=lines`` overrides the choice.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import Any

from tqdm.std import tqdm as _std_tqdm

log = logging.getLogger("oasis_vqvae.progress")

MODE_ENV = "OASIS_VQVAE_PROGRESS"
LOG_INTERVAL_S = float(os.environ.get("OASIS_VQVAE_PROGRESS_SECONDS", "30"))
"""Outside a terminal, at most one progress line per bar this often."""


def interactive(stream: Any = None) -> bool:
    """True when progress should redraw in place: ``stream`` (stderr) is a terminal."""
    mode = os.environ.get(MODE_ENV, "").strip().lower()
    if mode in ("bars", "lines"):
        return mode == "bars"
    stream = sys.stderr if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


class tqdm(_std_tqdm):  # noqa: N801  (a drop-in for tqdm.tqdm, used under the same name)
    """``tqdm.tqdm``: bars in a terminal; elsewhere whole lines, one every LOG_INTERVAL_S."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        stream = kwargs.get("file") or sys.stderr
        self._lines = not interactive(stream)
        self._last_line = ""
        if self._lines:
            kwargs.setdefault("mininterval", LOG_INTERVAL_S)
            kwargs.setdefault("ascii", True)
            kwargs["dynamic_ncols"] = False
        super().__init__(*args, **kwargs)

    def display(self, msg: str | None = None, pos: int | None = None) -> Any:
        """Redraw the bar in a terminal; elsewhere print a whole line if there is news."""
        if not self._lines:
            return super().display(msg, pos)
        # No cursor movement, no clearing: a full line, and only when there is news.
        text = self.__str__() if msg is None else msg
        if text.strip() and self.n and text != self._last_line:
            self.fp.write(text.strip() + "\n")
            self.fp.flush()
            self._last_line = text
        return None  # tells close() that nothing needs clearing with "\r"

    def close(self) -> None:
        """End the bar; outside a terminal with one last line of the final count."""
        if self._lines and not self.disable and self.n:
            self.display()  # the final count, once
            self.leave = False  # no extra redraw and newline from tqdm's close
        super().close()


def epoch_callback(epochs: int) -> Any:
    """A Keras callback reporting training: tqdm bars in a terminal, else lines in the log.

    One line per epoch: ``epoch 3/15 (12.1 s): loss 0.1234, val_loss 0.13``.
    """
    if interactive():
        from tqdm.keras import TqdmCallback

        return TqdmCallback(verbose=1, leave=False)
    import keras

    class EpochLines(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.started = time.monotonic()

        def on_epoch_begin(self, epoch: int, logs: dict[str, float] | None = None) -> None:
            self.started = time.monotonic()

        def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
            items = (logs or {}).items()
            values = ", ".join(f"{name} {float(value):.4g}" for name, value in items)
            seconds = time.monotonic() - self.started
            log.info("epoch %d/%d (%.1f s): %s", epoch + 1, epochs, seconds, values)

    return EpochLines()
