"""Checkpoints of the training loop: CPU copies of a training state, ``last.pt`` read back as tensors only, and
a writer that saves them in a background thread while training goes on."""

from __future__ import annotations

import pickle
import threading
import zipfile
from collections.abc import Sequence
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from thyro.errors import TrainingError
from thyro.fileio import atomic_path

#: How a Python caller starts a job afresh (the command line's ``--restart``).
RESTART = "restart=True for a study, resume=False for a fit or pretraining"
#: Entries of every ``last.pt`` (with ``within_epochs`` also ``step``).
STATE_KEYS = ("model", "optimizer", "scheduler", "epoch", "history")


def copy_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """A detached CPU copy of the weights (not a live reference to the model's tensors)."""
    return {k: v.detach().to("cpu", copy=True, memory_format=torch.contiguous_format)
            for k, v in model.state_dict().items()}


def to_cpu(obj):
    """Deep copy of a nested state (optimizer state included) with every tensor copied to the CPU."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_cpu(v) for v in obj)
    return obj


def load_resume_state(path: Path, keys: Sequence[str] = STATE_KEYS) -> dict:
    """The training state saved in ``path`` (``last.pt``), read as tensors only.

    A truncated, corrupt or hostile file (a pickle that would run code) is a :class:`TrainingError`
    naming it and the way out, without torch's own advice (which suggests ``weights_only=False``,
    i.e. running the file's code).
    """
    def unreadable(why: str) -> TrainingError:
        return TrainingError(f"{path} is unreadable ({why}): delete it or run with --restart (from Python: "
                             f"{RESTART}); the job then starts from epoch 1.")

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "truncated" in str(exc).lower():
            raise unreadable("truncated") from None
        raise unreadable("it holds more than tensors; it was refused unread, as loading it would run its "
                         "code") from None
    except (RuntimeError, EOFError, ValueError, OSError, zipfile.BadZipFile, AttributeError, KeyError,
            IndexError, TypeError, UnicodeDecodeError, MemoryError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        raise unreadable(f"truncated or corrupt: {first}") from None
    if not isinstance(state, dict) or any(k not in state for k in keys):
        raise unreadable("not a training state written by thyro")
    return state


def resume_error(path: Path, exc: BaseException) -> TrainingError:
    """A saved state that does not fit the job (other shapes or keys), as a message with the way out."""
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
    return TrainingError(f"{path} is unreadable (its state does not fit this job: {first}): delete it or run with "
                         f"--restart (from Python: {RESTART}); the job then starts from epoch 1.")


#: A file to write: ``("torch" | "safetensors", object, path)``.
Write = tuple[str, object, Path]


class CheckpointWriter:
    """Writes checkpoints in a background thread while the next steps train.

    The caller hands over CPU copies, so training cannot change them mid-write; at most one write is
    in flight (the next save, and the end of training, wait for it), and each file is written
    atomically, so a crash or a full disk leaves the previous checkpoint intact.  A write error is
    raised at the next save or at :meth:`wait`.
    """

    def __init__(self):
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def _write(self, items: list[Write]) -> None:
        try:
            for kind, obj, path in items:
                with atomic_path(path, suffix=".tmp") as tmp:
                    if kind == "safetensors":
                        save_file(obj, str(tmp))
                    else:
                        torch.save(obj, tmp)
        except BaseException as exc:  # surfaced in the training thread by wait()
            self._error = exc

    def submit(self, items: list[Write]) -> None:
        self.wait()
        self._thread = threading.Thread(target=self._write, args=(items,), daemon=False)
        self._thread.start()

    def wait(self) -> None:
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None:
            err, self._error = self._error, None
            raise err


__all__ = ["STATE_KEYS", "CheckpointWriter", "Write", "copy_state", "load_resume_state", "resume_error",
           "to_cpu"]
