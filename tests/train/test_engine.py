"""The shared training loop on a task of its own: gradient clipping, callbacks after the files, the
deterministic setting given back, the log and the checkpoint's position."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from thyro.train.engine import LoopSettings, Task, TrainingLoop


class _Regression(Task):
    """Least squares on a fixed set of points, in batches."""

    def __init__(self, n: int = 32, batch: int = 8, scale: float = 1.0):
        gen = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 4, generator=gen) * scale
        self.y = self.x @ torch.tensor([1.0, -2.0, 3.0, 0.5]) * scale
        self.batch, self.steps_per_epoch = batch, n // batch

    def begin_epoch(self, epoch, first_step, cpu_gen):
        order = torch.randperm(len(self.x), generator=cpu_gen)
        return (order[s * self.batch:(s + 1) * self.batch] for s in range(first_step, self.steps_per_epoch))

    def inputs(self, idx, gen):
        return self.x[idx], self.y[idx], len(idx)

    def loss(self, output, target):
        return F.mse_loss(output.reshape(-1), target)

    def end_epoch(self, end):
        return {"epoch": end.epoch + 1, "train_loss": round(float(end.loss_sum) / end.steps, 6)}, False


def _loop(tmp_path, task: _Regression, *, epochs: int = 1, clip: float | None = None, callbacks=()):
    torch.manual_seed(0)
    model = nn.Linear(4, 1)
    settings = LoopSettings(epochs=epochs, steps_per_epoch=task.steps_per_epoch, seed=0, device=torch.device("cpu"),
                            clip_grad_norm=clip)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    return TrainingLoop(model, optimizer, task, settings, tmp_path / "last.pt", tmp_path / "log.csv",
                        ("epoch", "train_loss"), callbacks=callbacks)


def _moved(loop: TrainingLoop) -> float:
    before = torch.cat([p.detach().clone().reshape(-1) for p in loop.model.parameters()])
    loop.run()
    after = torch.cat([p.detach().reshape(-1) for p in loop.model.parameters()])
    return float((after - before).norm())


def test_gradient_clipping_bounds_each_step(tmp_path):
    task = _Regression(n=8, batch=8, scale=10.0)  # one step with a large gradient
    free = _moved(_loop(tmp_path / "free", task))
    clipped = _moved(_loop(tmp_path / "clipped", task, clip=0.5))
    assert free > 1.0
    assert clipped <= 0.1 * 0.5 + 1e-6  # learning rate x the clipped norm


def test_callbacks_see_the_epoch_files_and_determinism_is_given_back(tmp_path):
    seen = []

    def callback(epoch, row):
        state = torch.load(tmp_path / "last.pt", weights_only=True)
        seen.append((epoch, row["epoch"], state["epoch"], len((tmp_path / "log.csv").read_text().splitlines())))

    was = torch.are_deterministic_algorithms_enabled()
    loop = _loop(tmp_path, _Regression(), epochs=3, callbacks=[callback])
    outcome = loop.run()
    assert torch.are_deterministic_algorithms_enabled() == was
    assert seen == [(0, 1, 0, 2), (1, 2, 1, 3), (2, 3, 2, 4)]
    assert outcome.finished and outcome.images == 3 * 32 and len(outcome.history) == 3
    assert outcome.history[-1]["train_loss"] < outcome.history[0]["train_loss"]

    again = _loop(tmp_path, _Regression(), epochs=5)
    assert again.resume() == (3, 0) and len(again.history) == 3
    assert len(again.run().history) == 5
