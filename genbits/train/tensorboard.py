"""``train.tensorboard=true``: a TensorBoard view of a run, under ``RUN/tensorboard/``.

A mirror, not a second log: every ``metrics.jsonl`` record the loop writes is also written as scalars (same tags,
same step) and every sample plot as an image, and ``metrics.jsonl`` stays the source of truth (``load_run``, reports
and sweeps read only it). The event stream follows the run's rewinds as ``metrics.jsonl`` does: a resumed run, or a
NaN rollback, first writes a TensorBoard purge marker at the step after the restored checkpoint, so whatever the
previous process logged past that checkpoint is hidden and each step shows once per tag. The package is optional
(``pip install 'genbits[tensorboard]'``); asking for it without it installed is a ``ConfigError`` before anything is
written.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from genbits.errors import ConfigError

if TYPE_CHECKING:
    from torch.utils.tensorboard import SummaryWriter

SAMPLES_TAG = "samples"


def summary_writer_class() -> type[SummaryWriter]:
    """torch's ``SummaryWriter``, or a one-line ConfigError naming the fix (the loop calls this before it writes)."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as e:
        cause = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ConfigError(
            f"train.tensorboard=true needs the tensorboard package ({cause}); "
            "install it with: pip install 'genbits[tensorboard]'"
        ) from None
    return SummaryWriter


class TensorBoard:
    """The run's event writer; does nothing when disabled, so the loop calls it unconditionally.

    Built before training (the import is checked on every process, so all of them fail alike), opened with
    ``start(step)`` once the loop knows the step it continues from; only the main process writes.
    """

    def __init__(self, log_dir: Path, enabled: bool, writes: bool = True):
        self.log_dir = log_dir
        self.writer_class = summary_writer_class() if enabled else None
        self.writes = writes
        self.writer: SummaryWriter | None = None

    def start(self, step: int) -> TensorBoard:
        """Open the writer to continue from ``step``: events a previous process logged after it are purged."""
        if self.writer_class is not None and self.writes:
            self.writer = self.writer_class(str(self.log_dir), purge_step=step + 1)
        return self

    def log(self, record: dict[str, Any]) -> None:
        """One metrics.jsonl record as scalars at its step: every numeric value under its own key."""
        if self.writer is None:
            return
        step = record["step"]
        for tag, value in record.items():
            if tag != "step" and isinstance(value, (int, float)) and not isinstance(value, bool):
                self.writer.add_scalar(tag, value, step)

    def image(self, png: Path, step: int) -> None:
        """A sample plot the loop saved, as an image (read back, so the plot is drawn once)."""
        if self.writer is None:
            return
        from matplotlib.image import imread

        pixels = imread(png)  # (H, W, 3 or 4) floats in [0, 1]
        self.writer.add_image(SAMPLES_TAG, pixels[..., :3], step, dataformats="HWC")

    def rewind(self, step: int) -> None:
        """The run went back to ``step`` (a NaN rollback): hide what was logged after it, as ``purge_step`` does."""
        if self.writer is None:
            return
        from tensorboard.compat.proto.event_pb2 import Event, SessionLog

        self.writer.file_writer.add_event(Event(step=step + 1, session_log=SessionLog(status=SessionLog.START)))

    def flush(self) -> None:
        """Called with every checkpoint: whatever a checkpoint covers is on disk even if the process is killed."""
        if self.writer is not None:
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    def __enter__(self) -> TensorBoard:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
