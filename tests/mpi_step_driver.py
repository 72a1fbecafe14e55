"""Run by tests/test_distributed.py under ``mpiexec -n N`` (or alone): one training step of a preset, then rank 0
saves every parameter's gradient (the sums over the ranks; G's from the G phase, D's from the last D step) and
the step's history row to an .npz.

    python tests/mpi_step_driver.py PRESET DTYPE WIDTH OUT.npz [KEY=VALUE ...]   (TrainConfig fields, e.g. gp=r1)
"""

import sys

import numpy as np

import npgan
from npgan import distributed
from npgan.run.presets import build, make_config


def main() -> None:
    preset, dtype, width, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    cfg = make_config(preset)
    cfg.dtype, cfg.hidden = dtype, width
    for kv in sys.argv[5:]:
        k, v = kv.split("=", 1)
        setattr(cfg.train, k, type(getattr(cfg.train, k))(v) if getattr(cfg.train, k) is not None else float(v))
    npgan.set_default_dtype(dtype)
    npgan.manual_seed(cfg.seed)
    G, D, _, _, trainer = build(cfg)
    trainer.step()
    row = trainer.flush()[0]
    grads = {f"{n}/{k}": np.asarray(p.grad) for n, m in (("G", G), ("D", D)) for k, p in m.named_parameters()
             if p.grad is not None}
    if distributed.world().is_root:
        np.savez(out, **grads, **{f"row/{k}": np.float64(v) for k, v in row.items()})


if __name__ == "__main__":
    main()
