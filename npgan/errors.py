"""The exceptions npgan raises, in one place.

Every failure a user can cause or meet is one of these, with a one-line message that names the argument, file or
network involved and the values that are wrong. Nothing else escapes the public API (no IndexError, KeyError,
AttributeError or ZeroDivisionError from deep inside; tests/test_fuzz.py checks it).

Bad arguments (any function, layer, loss, optimizer, loader):

* ``ValueError`` — a value is out of range or shapes do not fit ("linear: input of shape (2, 3) does not fit
  weight of shape (4, 5)");
* ``TypeError`` — an argument has the wrong type or dtype ("kde_entropy: x must be a float tensor, got dtype
  int64");
* ``IndexError`` — only from ``tensor[key]`` with an index outside the tensor, as Python sequences do;
* :class:`npgan.nn.StateDictError` (a ValueError) — a state dict does not fit a module;
* :class:`npgan.data.MNISTNotFoundError` (a FileNotFoundError) — an MNIST file is missing;
* :class:`npgan.backend.DeviceError` (a RuntimeError) — the GPU cannot be used;
* :class:`npgan.GradcheckError` (an AssertionError) — a gradient check failed.

Runs, checkpoints and training (defined here; all derive from :class:`NpganError` too):

* :class:`CheckpointError` (ValueError) — a checkpoint is missing, truncated, altered, of a newer format, of another
  architecture or holds pickled objects; nothing was changed by the failed load;
* :class:`CheckpointWriteError` (OSError, with the errno) — a checkpoint could not be written (disk full, no
  permission); the previous checkpoint file is intact and the message says so;
* :class:`WriteError` (OSError, with the errno) — another file (history.csv, a picture, samples, config.toml,
  metrics.json) could not be written; the message names the file;
* :class:`RunError` (ValueError) — a run directory cannot be created or resumed;
* :class:`FileKindError` (ValueError) — a path names something npgan will not write or read: an output that is a
  symlink or exists and is not a regular file (a device, FIFO, socket, directory), an input that is not a regular
  file (:mod:`npgan.files`); nothing was written;
* :class:`DivergenceError` (FloatingPointError) — a loss or gradient became nan/inf; the message names the network,
  the loss and the step; no parameter was changed by that step;
* :class:`InsufficientMemoryError` (MemoryError) — a configuration needs more memory than the machine has,
  detected before training starts.

Warnings: :class:`PrecisionWarning` (a UserWarning) when float16 data is upcast (npgan computes in float32 or
float64).
"""

from __future__ import annotations

__all__ = ["NpganError", "CheckpointError", "CheckpointWriteError", "WriteError", "RunError", "FileKindError",
           "DivergenceError", "InsufficientMemoryError", "PrecisionWarning"]


class NpganError(Exception):
    """Base class of the run-level errors defined here (each also derives from the matching built-in)."""


class CheckpointError(NpganError, ValueError):
    """A checkpoint cannot be read or does not fit: names the file and the reason; nothing was changed."""


class CheckpointWriteError(NpganError, OSError):
    """A checkpoint could not be written (``errno`` kept, e.g. ENOSPC); the previous checkpoint is intact."""


class WriteError(NpganError, OSError):
    """A file other than the checkpoint could not be written (``errno`` kept); the message names the file."""


class RunError(NpganError, ValueError):
    """A run cannot be created or resumed; the message names the directory or file and the reason."""


class FileKindError(NpganError, ValueError):
    """A path is not what npgan may write or read there: an output that is a symlink or exists and is not a
    regular file, or an input that is not a regular file; names the path and what it is. Nothing was written."""


class DivergenceError(NpganError, FloatingPointError):
    """A non-finite loss or gradient norm stopped training before the step changed any parameter.

    Attributes: ``step`` (the step that diverged, 1-based), ``network`` ("G" or "D"), ``loss`` ("loss_g" or
    "loss_d"), ``values`` (the offending loss and gradient norm as floats).
    """

    def __init__(self, message: str, step: int = 0, network: str = "", loss: str = "",
                 values: dict[str, float] | None = None) -> None:
        super().__init__(message)
        self.step, self.network, self.loss = step, network, loss
        self.values = dict(values or {})


class InsufficientMemoryError(NpganError, MemoryError):
    """The estimated memory of a training step exceeds what the machine has available."""


class PrecisionWarning(UserWarning):
    """float16 data was converted to npgan's default float dtype."""
