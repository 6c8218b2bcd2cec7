"""The training loop that supervised fitting and pretraining share, written out plainly.

A :class:`Task` brings what differs: its batches, inputs and loss, what follows a step (an average of
the weights) and ends an epoch (validation and selection; statistics over ranks), and its entries in
the checkpoint.  :class:`TrainingLoop` does the rest, the same way for every task:

* **seeds**: each epoch seeds torch's global generator, a CPU generator (orders, samplers) and a device
  generator (augmentation) from ``(seed, epoch)``; with ``within_epochs`` the device generator is
  seeded again before each step from ``(seed, epoch, step, rank)``.  A resumed run so repeats an
  uninterrupted one exactly on the CPU (where the loop also asks for deterministic algorithms).
* **schedule**: linear warm-up, then cosine decay, stepped every optimisation step (:func:`lr_factor`);
  autocast on CUDA (``amp``); channels-last where the task asks (:func:`place`, :func:`device_batch`);
  optional clipping of the gradient norm.
* **failures**: the summed loss is read back (a wait for the GPU) only every :data:`SYNC_STEPS` steps,
  before every save and at the end of an epoch; a non-finite loss stops the run, and as no such state
  is ever saved the checkpoint keeps the last good one.
* **checkpoints**: ``last.pt`` (model, optimiser, schedule, position, history, the task's entries) after
  every epoch or at most every ``save_interval_s`` seconds, and every ``save_every_steps`` steps;
  written atomically in a background thread while training goes on
  (:class:`~thyro.train.checkpoints.CheckpointWriter`);
  :meth:`TrainingLoop.resume` continues from it.
* **records**: a :mod:`thyro.progress` task per epoch (images, so a reporter shows images/s), a logged line
  per epoch, the log CSV rewritten every epoch, and callbacks ``(epoch, row)`` once the epoch's files are on
  disk (tracking, TensorBoard).

Only the main process (rank 0) writes files, logs and reports progress.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from thyro import progress
from thyro.device import autocast, autocast_dtype
from thyro.errors import TrainingError
from thyro.fileio import write_csv_rows
from thyro.models.inference import to_input
from thyro.train.checkpoints import (
    STATE_KEYS,
    CheckpointWriter,
    Write,
    copy_state,
    load_resume_state,
    resume_error,
    to_cpu,
)

#: The summed loss is read back (a wait for the GPU) every this many steps.
SYNC_STEPS = 20
log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------------
# seeds, schedule, batches


def epoch_seed(seed: int, epoch: int, stream: int) -> int:
    """The seed of one random stream (0 global, 1 CPU, 2 device) in ``epoch``."""
    return (seed * 1_000_003 + epoch * 7_919 + stream * 104_729) % (2**63 - 1)


def step_seed(seed: int, epoch: int, step: int, rank: int) -> int:
    """The device generator's seed for one step of one rank (runs that resume inside an epoch)."""
    return (seed * 1_000_003 + epoch * 7_919 + step * 104_729 + rank * 15_485_863 + 17) % (2**63 - 1)


def lr_factor(step: int, total: int, warmup: int, min_ratio: float) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine decay to ``min_ratio``."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def place(model: nn.Module, device: torch.device, channels_last: bool) -> None:
    """Move ``model`` to ``device``, in channels-last memory format when asked."""
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)


def device_batch(images: torch.Tensor, device: torch.device, channels_last: bool) -> torch.Tensor:
    """uint8 images ``(B, S, S)`` moved to ``device`` as float ``(B, 1, S, S)`` in [0, 1]."""
    x = to_input(images.to(device, non_blocking=True))
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


@contextlib.contextmanager
def deterministic_on_cpu(device: torch.device):
    """Deterministic algorithms while training on the CPU; the previous setting is restored after."""
    was = torch.are_deterministic_algorithms_enabled()
    if device.type == "cpu":
        torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(was, warn_only=True)


# ------------------------------------------------------------------------------------------------
# the loop


@dataclass(frozen=True)
class EpochEnd:
    """What the loop knows at the end of an epoch."""

    epoch: int                 # 0-based
    loss_sum: torch.Tensor     # the losses of the steps this process ran in the epoch, summed (not read yet)
    steps: int
    images: int                # trained on in the epoch, over all processes
    started: float             # time.perf_counter() at the epoch's start
    lrs: list[float]           # the learning rate of each parameter group now


class Task:
    """What one kind of training adds to :class:`TrainingLoop` (override what applies)."""

    #: The task's entries of ``last.pt`` (written by :meth:`state`) that a resume needs.
    state_keys: tuple[str, ...] = ()

    def begin_epoch(self, epoch: int, first_step: int, cpu_gen: torch.Generator) -> Iterable:
        """Set up ``epoch`` (the model is in training mode) and return its batches from ``first_step``."""
        raise NotImplementedError

    def inputs(self, batch, gen: torch.Generator) -> tuple[torch.Tensor, Any, int]:
        """The model's input on the device (augmented with ``gen``), the loss's target, and the number of
        images the step trains on (over all processes)."""
        raise NotImplementedError

    def loss(self, output: torch.Tensor, target) -> torch.Tensor:
        """The loss of the model's float ``output`` (computed outside autocast)."""
        raise NotImplementedError

    def after_step(self) -> None:
        """After each optimiser step (e.g. update an average of the weights)."""

    def end_epoch(self, end: EpochEnd) -> tuple[dict, bool]:
        """The epoch's log row, and whether training should stop after it."""
        raise NotImplementedError

    def stop_requested(self) -> bool:
        """True when training must not go on (e.g. a resumed job that had stopped early)."""
        return False

    def status(self, row: dict) -> str:
        """The progress bar's text after an epoch."""
        return ""

    def line(self, row: dict) -> str:
        """The line printed for an epoch."""
        return self.status(row)

    def check_resume(self, state: dict) -> None:
        """Refuse a saved state that belongs to another run (raise), before anything is loaded."""

    def state(self) -> dict:
        """The task's entries of ``last.pt`` (CPU copies)."""
        return {}

    def load_state(self, state: dict) -> None:
        """Take the task's entries back from a saved state."""

    def extra_writes(self) -> list[Write]:
        """Files to write together with an end-of-epoch ``last.pt`` (e.g. the best weights so far)."""
        return []


@dataclass(frozen=True)
class LoopSettings:
    """How :class:`TrainingLoop` runs (see the module docstring)."""

    epochs: int
    steps_per_epoch: int
    seed: int
    device: torch.device
    amp: str = "auto"
    warmup_epochs: float = 0.0
    min_lr_ratio: float = 0.0
    description: str = "train"
    clip_grad_norm: float | None = None  # clip the gradients' global norm to this (None: no clipping)
    save_interval_s: float = 0.0         # last.pt after every epoch (0), or at most this often (always at the end)
    save_every_steps: int = 0            # also save every this many steps of the run, inside epochs
    max_steps: int | None = None         # stop after this many steps of the whole run (saved first)
    within_epochs: bool = False          # last.pt holds (epoch, step); per-step seeds; resume inside an epoch
    rank: int = 0
    main: bool = True                    # this process writes files
    images_per_step: int = 0             # images one step trains on, over all processes (0: unknown)
    diverged_advice: str = "Lower the learning rate or check the images."


@dataclass
class LoopOutcome:
    history: list[dict]
    seconds: float
    images: int                # trained on, over all processes
    finished: bool             # False when ``max_steps`` stopped the run


@dataclass
class TrainingLoop:
    """The epoch loop over a :class:`Task` (see the module docstring).

    ``model`` is the network whose weights are trained and saved, ``forward`` what runs a batch (the
    model itself, a compiled or a DistributedDataParallel wrapper of it).
    """

    model: nn.Module
    optimizer: torch.optim.Optimizer
    task: Task
    settings: LoopSettings
    last_path: Path
    log_path: Path
    log_fields: Sequence[str]
    forward: nn.Module | None = None
    callbacks: Sequence[Callable[[int, dict], None]] = ()
    history: list[dict] = field(default_factory=list)
    position: tuple[int, int] = (0, 0)   # (epoch, step) the run starts at

    def __post_init__(self):
        s = self.settings
        total = s.steps_per_epoch * s.epochs
        warmup = int(round(s.warmup_epochs * s.steps_per_epoch))
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: lr_factor(step, total, warmup, s.min_lr_ratio))
        self.forward = self.forward if self.forward is not None else self.model
        self.amp_dtype = autocast_dtype(s.device, s.amp)

    def resume(self) -> tuple[int, int] | None:
        """Continue from ``last_path`` when it exists: returns the ``(epoch, step)`` the run goes on at."""
        if not self.last_path.exists():
            return None
        s = self.settings
        keys = STATE_KEYS + (("step",) if s.within_epochs else ()) + self.task.state_keys
        state = load_resume_state(self.last_path, keys)
        self.task.check_resume(state)
        try:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            epoch, history = int(state["epoch"]), list(state["history"])
            step = int(state["step"]) if s.within_epochs else s.steps_per_epoch
            self.task.load_state(state)
        except (RuntimeError, KeyError, ValueError, TypeError, IndexError) as exc:
            raise resume_error(self.last_path, exc) from None
        self.history = history
        self.position = (epoch + 1, 0) if step >= s.steps_per_epoch else (epoch, step)
        return self.position

    def run(self) -> LoopOutcome:
        """Train from :attr:`position` to the last epoch (or ``max_steps``, or the task's stop)."""
        s, task = self.settings, self.task
        start_epoch, start_step = self.position
        done = start_epoch * s.steps_per_epoch + start_step
        writer = CheckpointWriter()
        gen = torch.Generator(device=s.device)
        images, t_run, last_save = 0, time.perf_counter(), time.monotonic()
        with contextlib.ExitStack() as stack:
            stack.callback(writer.wait)
            stack.enter_context(deterministic_on_cpu(s.device))
            for epoch in range(start_epoch, s.epochs):
                if task.stop_requested():
                    break
                first = start_step if epoch == start_epoch else 0
                with self._progress(epoch, first) as bar:
                    end, done, stopped = self._train_epoch(epoch, first, done, gen, writer, bar)
                    if stopped:
                        return LoopOutcome(self.history, time.perf_counter() - t_run, images + end.images, False)
                    images += end.images
                    row, stop = task.end_epoch(end)
                    self.history.append(row)
                    if (s.save_interval_s <= 0 or time.monotonic() - last_save >= s.save_interval_s or stop
                            or epoch + 1 == s.epochs):
                        self._save(writer, epoch, s.steps_per_epoch, task.extra_writes())
                        last_save = time.monotonic()
                    self._record(epoch, row, bar, writer)
        return LoopOutcome(self.history, time.perf_counter() - t_run, images, finished=True)

    def _progress(self, epoch: int, first: int) -> progress.Task:
        """The epoch's progress task (images; reported by the main process only)."""
        s = self.settings
        total = (s.steps_per_epoch - first) * s.images_per_step if s.images_per_step else None
        with progress.reporting(progress.current() if s.main else None):
            return progress.task(f"{s.description} epoch {epoch + 1}/{s.epochs}", total, unit="image")

    def _train_epoch(self, epoch: int, first: int, done: int, gen: torch.Generator, writer: CheckpointWriter,
                     bar: progress.Task) -> tuple[EpochEnd, int, bool]:
        """The steps of ``epoch`` from step ``first``: what the epoch did, the steps done in the run, and
        whether ``max_steps`` stopped the run inside it."""
        s, task = self.settings, self.task
        started = time.perf_counter()
        torch.manual_seed(epoch_seed(s.seed, epoch, 0))  # dropout and anything else global
        cpu_gen = torch.Generator().manual_seed(epoch_seed(s.seed, epoch, 1))
        gen.manual_seed(epoch_seed(s.seed, epoch, 2))
        self.forward.train()  # type: ignore[union-attr]
        loss_sum, steps, epoch_images = torch.zeros((), device=s.device), 0, 0
        for step, batch in enumerate(task.begin_epoch(epoch, first, cpu_gen), start=first):
            if s.within_epochs:
                gen.manual_seed(step_seed(s.seed, epoch, step, s.rank))
            loss, n = self._step(batch, gen)
            loss_sum += loss.detach()
            steps, epoch_images, done = steps + 1, epoch_images + n, done + 1
            save_due = bool(s.save_every_steps and done % s.save_every_steps == 0 and step + 1 < s.steps_per_epoch)
            stop_due = s.max_steps is not None and done >= s.max_steps
            status = None
            if save_due or stop_due or (step + 1) % SYNC_STEPS == 0 or step + 1 == s.steps_per_epoch:
                self._check_finite(loss_sum, steps, epoch, step)
                status = f"loss {loss.item():.3f}"
            bar.advance(n, status=status)
            if save_due or stop_due:
                self._save(writer, epoch, step + 1)
            if stop_due:
                break
        else:
            stop_due = False
        end = EpochEnd(epoch, loss_sum, steps, epoch_images, started, self.scheduler.get_last_lr())
        return end, done, stop_due

    def _step(self, batch, gen: torch.Generator) -> tuple[torch.Tensor, int]:
        x, target, n = self.task.inputs(batch, gen)
        with autocast(self.settings.device, self.amp_dtype):
            output = self.forward(x).float()  # type: ignore[misc]
        loss = self.task.loss(output, target)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.settings.clip_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.settings.clip_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.task.after_step()
        return loss, n

    def _check_finite(self, loss_sum: torch.Tensor, steps: int, epoch: int, step: int) -> None:
        if not torch.isfinite(loss_sum):
            s = self.settings
            raise TrainingError(
                f"{s.description}: the loss became {float(loss_sum) / steps} in epoch {epoch + 1} (by step "
                f"{step + 1}); the run stopped and its last good state is kept in {self.last_path}. "
                f"{s.diverged_advice}")

    def _save(self, writer: CheckpointWriter, epoch: int, step: int, files: list[Write] | None = None) -> None:
        if not self.settings.main:
            return
        state = {"model": copy_state(self.model), "optimizer": to_cpu(self.optimizer.state_dict()),
                 "scheduler": self.scheduler.state_dict(), "epoch": epoch, "history": list(self.history),
                 **({"step": step} if self.settings.within_epochs else {}), **self.task.state()}
        writer.submit([*(files or []), ("torch", state, self.last_path)])

    def _record(self, epoch: int, row: dict, bar: progress.Task, writer: CheckpointWriter) -> None:
        """The epoch's log file, progress text, logged line and callbacks."""
        if self.settings.main:
            write_csv_rows(self.log_path, self.history, self.log_fields)
            log.info(self.task.line(row))
        bar.update(status=self.task.status(row))
        if self.callbacks:
            writer.wait()  # callbacks see the files of this epoch
            for callback in self.callbacks:
                callback(epoch, row)
