"""What one ``shapes-dcgan`` training step costs, for the preset and the variants tried against it.

    python benchmarks/shapes_steps.py [--threads 2] [--rounds 5] [--steps 32] [--torch]

Each variant is the preset with one or two fields changed, built in the same process: the preset as it is
(G and D at width 24, lazy R1 on every 4th D step), D at width 16, R1 on every 16th D step (StyleGAN2's
interval), both of these, ``reuse_fake`` (the G step on the D step's fake: one G forward a step), and with R1 on
every 16th D step the narrower networks: G and D at 16, G at 20 and D at 16, G at 24 and D at 12. Round
after round every variant runs ``--steps`` ``Trainer.step()`` calls after a warm-up, so a machine whose speed
drifts treats them alike; the table gives the median ms a step over rounds and the ratio to the preset. With
``--torch`` the preset's PyTorch twin (``shapes_torch_twin.py``: the same networks and recipe in ``torch.nn``, on
``--threads`` torch threads) takes its turn in every round too. What a
step buys is another matter: docs/results.md's shapes-dcgan section has the study runs. A benchmark, not a test:
nothing here is asserted.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import machine_line, use_threads  # noqa: E402

from npgan import backend  # noqa: E402
from npgan.run import presets  # noqa: E402

VARIANTS = {  # name: (RunConfig fields, TrainConfig fields) changed from the preset
    "preset (G and D 24, R1 every 4)": ({}, {}),
    "D at 16": ({"d_hidden": 16}, {}),
    "R1 every 16": ({}, {"gp_every": 16}),
    "D at 16, R1 every 16": ({"d_hidden": 16}, {"gp_every": 16}),
    "reuse_fake": ({}, {"reuse_fake": True}),
    "G and D at 16, R1 every 16": ({"hidden": 16}, {"gp_every": 16}),
    "G at 20, D at 16, R1 every 16": ({"hidden": 20, "d_hidden": 16}, {"gp_every": 16}),
    "D at 12, R1 every 16": ({"d_hidden": 12}, {"gp_every": 16}),
}


def trainer(run_fields: dict, train_fields: dict):
    cfg = presets.make_config("shapes-dcgan")
    for k, v in run_fields.items():
        setattr(cfg, k, v)
    for k, v in train_fields.items():
        setattr(cfg.train, k, v)
    backend.manual_seed(0)
    return presets.build(cfg).trainer


def torch_twin(threads: int):
    """The preset's PyTorch twin as an object with npgan's Trainer's ``step()`` and ``flush()``."""
    import torch
    from shapes_torch_twin import make_step, networks

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    cfg = presets.make_config("shapes-dcgan")
    t = cfg.train
    G, D = networks(torch.nn, cfg.hidden, t.z_dim, cfg.d_hidden)
    opt_g, opt_d = (torch.optim.Adam(net.parameters(), t.lr, betas=(cfg.beta1, cfg.beta2)) for net in (G, D))
    step = make_step(torch, t, G, D, opt_g, opt_d, presets.real_source(cfg))

    class Twin:
        s = 0

        def step(self) -> None:
            step(self.s)
            self.s += 1

        def flush(self) -> None:  # torch's CPU ops are done when they return
            pass

    return Twin()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=32, help="steps timed per variant and round (a multiple of 16)")
    p.add_argument("--torch", action="store_true", help="also the preset's PyTorch twin (needs torch)")
    a = p.parse_args(argv)
    use_threads(a.threads)  # npgan's splits and its BLAS (the twin sets torch's own)
    print(machine_line())
    print(f"npgan threads: {a.threads}; {a.rounds} rounds of {a.steps} steps each, after 6 warm-up steps")
    trainers = {name: trainer(*fields) for name, fields in VARIANTS.items()}
    if a.torch:
        trainers[f"PyTorch twin of the preset ({a.threads} torch threads)"] = torch_twin(a.threads)
    for tr in trainers.values():
        for _ in range(6):
            tr.step()
        tr.flush()
    times: dict[str, list[float]] = {name: [] for name in trainers}
    for _ in range(a.rounds):
        for name, tr in trainers.items():
            t0 = time.perf_counter()
            for _ in range(a.steps):
                tr.step()
            tr.flush()
            times[name].append(1e3 * (time.perf_counter() - t0) / a.steps)
    base = statistics.median(times[next(iter(VARIANTS))])
    print(f"{'variant':40s} {'ms a step':>10s} {'/ preset':>9s}   rounds")
    for name, ts in times.items():
        m = statistics.median(ts)
        print(f"{name:40s} {m:10.1f} {m / base:9.2f}   {' '.join(f'{t:.0f}' for t in ts)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
