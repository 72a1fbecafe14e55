"""The training progress bar moves every step, names the seconds a step takes from the first step on, and
changes its postfix (losses, D(x), D(G(z))) at each log interval.

No wall time: tqdm reads a fake clock that only the training steps advance (8 s a step, as a dcgan64 step on two
loaded cores), and the bar's output is captured and split into the frames it drew.
"""

from __future__ import annotations

import re

import pytest

tqdm_std = pytest.importorskip("tqdm.std")

from npgan.gan.trainer import Trainer  # noqa: E402
from npgan.run.experiment import Run  # noqa: E402
from npgan.run.presets import make_config  # noqa: E402

SECONDS_PER_STEP = 8.0


@pytest.fixture
def slow_steps(monkeypatch):
    """Each training step takes SECONDS_PER_STEP on tqdm's clock (and no time at all on the wall's)."""
    clock = [1_000.0]
    monkeypatch.setattr(tqdm_std, "time", lambda: clock[0])
    monkeypatch.setattr(tqdm_std.tqdm, "monitor_interval", 0)  # no monitor thread reading the real clock
    step = Trainer.step

    def timed(self):
        done = step(self)
        clock[0] += SECONDS_PER_STEP
        return done

    monkeypatch.setattr(Trainer, "step", timed)


def _frames(err: str, total: int) -> list[str]:
    """The bar's frames (tqdm redraws with a carriage return), those showing a count out of ``total``."""
    return [f for f in re.split(r"[\r\n]", err) if f"/{total} [" in f]


def _run(tmp_path, steps, log_every):
    cfg = make_config("ring8")
    cfg.train.steps, cfg.train.batch_size = steps, 32
    cfg.log_every, cfg.checkpoint_every, cfg.sample_every, cfg.eval_samples = log_every, 1000, 1000, 200
    return Run.create(cfg, tmp_path / "r")


def test_the_bar_moves_every_step_with_seconds_per_step_from_the_first(tmp_path, capsys, slow_steps):
    steps, log_every = 7, 5
    _run(tmp_path, steps, log_every).train(progress=True)
    frames = _frames(capsys.readouterr().err, steps)
    shown = {int(re.search(rf"(\d+)/{steps} \[", f).group(1)): f for f in frames}
    assert set(range(1, steps + 1)) <= set(shown), frames  # a frame for every step
    assert "8.00s/step" in shown[1] and "00:08<00:48" in shown[1], shown[1]  # after one step: its time and the rest
    for s in range(1, steps + 1):
        # the postfix of the log interval: absent before step 5, present from it on (refreshed at 5 and 7)
        assert ("loss_d=" in shown[s]) == (s >= log_every), (s, shown[s])
    assert re.search(r"loss_d=\S+ loss_g=\S+ D\(x\)=\S+ D\(G\(z\)\)=\S+", shown[steps])


def test_a_resumed_run_counts_on_from_its_step(tmp_path, capsys, slow_steps):
    run = _run(tmp_path, 4, 2)
    run.stop_at = 2
    run.train(progress=False)
    Run.resume(tmp_path / "r").train(progress=True)
    frames = _frames(capsys.readouterr().err, 4)
    counts = [int(re.search(r"(\d+)/4 \[", f).group(1)) for f in frames]
    assert counts[0] == 2 and {3, 4} <= set(counts) and 1 not in counts, frames
    assert any(re.search(r"3/4 \[00:08<00:08, +8\.00s/step", f) for f in frames), frames  # its clock: this session
