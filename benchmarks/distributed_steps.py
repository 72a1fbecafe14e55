"""One training step on 2 cores three ways: npgan in one process on 2 threads, npgan on 2 processes of 1 thread
each (``--nproc 2``: data-parallel over MPI, npgan.distributed), and PyTorch on 2 threads.

    python benchmarks/distributed_steps.py [--cases shapes,dcgan32,dcgan64] [--rounds 3] [--steps N]

Cases: ``shapes`` is the shapes-dcgan preset's step (G and D at width 24, z 64, batch 64, two G forwards, lazy R1
every 4th D step) against its PyTorch twin (shapes_torch_twin.py); ``dcgan32`` and ``dcgan64`` are the DCGAN
cases of bench.py (32×32×3 at batch 64 and 64×64×3 at batch 128, ngf = ndf = 64, z 100, Adam 2e-4, one G forward
a step: npgan's ``reuse_fake``) on the generated shapes, against bench.py's PyTorch step. Every measurement is a
fresh process (or two, under the mpiexec of the ``mpi`` extra) that builds the case, takes warm-up steps, then
times ``--steps`` steps (the ranks meet at a barrier before and after); round after round every setting runs
once, so a machine whose speed drifts treats them alike, and the ratios are medians of per-round ratios. The
processes get the BLAS threads of their setting through ``OPENBLAS_NUM_THREADS``. The first line names the CPU,
its flags and the BLAS. A benchmark, not a test: nothing here is asserted.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

from bench import machine_line  # noqa: E402

STEPS = {"shapes": 24, "dcgan32": 12, "dcgan64": 3}
WARMUP = {"shapes": 4, "dcgan32": 2, "dcgan64": 1}


def _config(case: str):
    from npgan.run import presets
    cfg = presets.make_config("shapes-dcgan")
    if case != "shapes":
        size, batch = (32, 64) if case == "dcgan32" else (64, 128)
        cfg.image_size, cfg.hidden, cfg.d_hidden = size, 64, 0
        t = cfg.train
        t.z_dim, t.batch_size, t.lr, t.lr_final, t.gp, t.reuse_fake = 100, batch, 2e-4, None, "", True
    return cfg


def _npgan_stepper(case: str):
    from npgan import backend, distributed
    from npgan.run import presets
    cfg = _config(case)
    backend.manual_seed(0)
    tr = presets.build(cfg).trainer
    w = distributed.world()

    def run(n: int) -> None:
        for _ in range(n):
            tr.step()
        tr.flush()
        w.barrier()
    return run, w


def _torch_stepper(case: str, threads: int):
    import torch
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    if case == "shapes":
        from shapes_steps import torch_twin
        twin = torch_twin(threads)

        def run(n: int) -> None:
            for _ in range(n):
                twin.step()
        return run
    from functools import partial

    from cases_conv import dcgan_step_torch
    from cases_images import dcgan
    size, batch = (32, 64) if case == "dcgan32" else (64, 128)
    step = dcgan_step_torch(partial(dcgan, size=size), (3, size, size), batch, "cpu")

    def run(n: int) -> None:
        for _ in range(n):
            step()
    return run


def worker(case: str, kind: str, steps: int) -> None:
    """In a fresh process (under mpiexec for kind "mpi"): ms a step, printed by rank 0."""
    if kind == "torch":
        run, is_root = _torch_stepper(case, 2), True
    else:
        if kind == "threads":
            from npgan import parallel
            parallel.set_num_threads(2)
        run, w = _npgan_stepper(case)
        is_root = w.is_root
    run(WARMUP[case])
    t0 = time.perf_counter()
    run(steps)
    ms = 1e3 * (time.perf_counter() - t0) / steps
    if is_root:
        print(f"MS {ms:.3f}", flush=True)


def measure(case: str, kind: str, steps: int) -> float:
    env = dict(os.environ, PYTHONPATH=str(ROOT), OPENBLAS_NUM_THREADS="1" if kind == "mpi" else "2")
    env.pop("NPGAN_NUM_THREADS", None)
    cmd = [sys.executable, __file__, "--worker", case, kind, str(steps)]
    if kind == "mpi":
        cmd = [str(Path(sys.executable).parent / "mpiexec"), "-n", "2", *cmd]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("MS ")]
    if out.returncode != 0 or not lines:
        raise SystemExit(f"{case} {kind} failed ({out.returncode}): {out.stderr[-2000:]}")
    return float(lines[0].split()[1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", default="shapes,dcgan32,dcgan64")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=float, default=1.0, help=f"scale the timed steps ({STEPS})")
    p.add_argument("--no-torch", action="store_true")
    p.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.worker:
        worker(a.worker[0], a.worker[1], int(a.worker[2]))
        return 0
    try:
        import torch
    except ImportError:
        torch = None
    print(machine_line(torch))
    kinds = ["threads", "mpi"] + ([] if a.no_torch or torch is None else ["torch"])
    names = {"threads": "npgan, 1 process x 2 threads", "mpi": "npgan --nproc 2 (1 thread each)",
             "torch": "PyTorch, 2 threads"}
    print(f"{a.rounds} rounds; in each, every setting once (fresh processes); ms a step after warm-up steps")
    for case in a.cases.split(","):
        steps = max(1, round(STEPS[case] * a.steps))
        times: dict[str, list[float]] = {k: [] for k in kinds}
        for _ in range(a.rounds):
            for k in kinds:
                times[k].append(measure(case, k, steps))
        print(f"\n{case} ({steps} steps timed a round)")
        for k in kinds:
            print(f"  {names[k]:34s} median {statistics.median(times[k]):9.1f} ms   rounds "
                  + " ".join(f"{t:.1f}" for t in times[k]))
        ratio = [t / m for t, m in zip(times["threads"], times["mpi"])]
        print(f"  2 threads / --nproc 2: median {statistics.median(ratio):.2f}x  (rounds "
              + " ".join(f"{r:.2f}" for r in ratio) + ")")
        if "torch" in times:
            ratio = [t / m for t, m in zip(times["torch"], times["mpi"])]
            print(f"  PyTorch 2 threads / --nproc 2: median {statistics.median(ratio):.2f}x  (rounds "
                  + " ".join(f"{r:.2f}" for r in ratio) + ")")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
