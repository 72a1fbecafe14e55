"""Wall and CPU time of short ``npgan train`` runs under several thread settings, taken in alternation.

    python benchmarks/studies/train_threads.py [--presets ring8,grid25,digits-mlp,digits-dcgan] [--rounds 3] [--busy]
        [--steps SCALE] [--setting NAME=ROOT[:VAR=VALUE,...]] ...

Each setting is a checkout of npgan (ROOT, put first on PYTHONPATH) and extra environment variables; the default
compares this checkout as it is ("auto": npgan's own rule, parallel.fit_blas) with the same code with the BLAS
held to one thread for the whole run ("blas1"). Before/after a change: ``--setting before=../main --setting
after=.``. Round after round every setting runs every
preset once (``/usr/bin/time``-style figures from ``os.wait4``), so a machine whose speed drifts treats them
alike; medians over rounds. ``--busy`` starts ``python -c "while 1: pass"`` beside the runs (the second core is
then taken), as on a laptop with something else running. CPU time (user + system) moves less with the machine's
load than wall time. The figures quoted in benchmarks/README.md ("Convolutions and threads").
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))  # bench.py

from bench import machine_line  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
STEPS = {"ring8": 1500, "grid25": 1500, "digits-mlp": 600, "digits-dcgan": 300}


def run_once(root: str, env_extra: dict, preset: str, steps: int) -> tuple[float, float]:
    """(wall s, cpu s) of one ``npgan train`` run in a fresh output directory."""
    env = dict(os.environ, PYTHONPATH=root, **env_extra)
    with tempfile.TemporaryDirectory() as out:
        cmd = [sys.executable, "-m", "npgan.run.cli", "train", "--preset", preset, "--steps", str(steps),
               "--no-progress", "--out", os.path.join(out, "run")]
        t0 = time.perf_counter()
        p = subprocess.Popen(cmd, cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        _, status, ru = os.wait4(p.pid, 0)
        wall = time.perf_counter() - t0
        if os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit(f"{preset} under {root} {env_extra} failed: {p.stderr.read().decode()[-2000:]}")
        p.stderr.close()
    return wall, ru.ru_utime + ru.ru_stime


def parse_setting(text: str) -> tuple[str, str, dict]:
    name, _, rest = text.partition("=")
    root, _, envs = rest.partition(":")
    env = dict(kv.split("=", 1) for kv in envs.split(",") if kv)
    return name, os.path.abspath(root), env


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", default=",".join(STEPS))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=float, default=1.0, help=f"scale the step counts ({STEPS})")
    ap.add_argument("--busy", action="store_true", help="run a busy loop beside the runs")
    ap.add_argument("--setting", action="append", default=[], help="NAME=ROOT[:VAR=VALUE,...] (repeatable)")
    a = ap.parse_args()
    print(machine_line())  # the CPU, its SIMD flags and the BLAS kernel beside the figures
    root = os.path.dirname(os.path.dirname(HERE))  # the checkout (benchmarks/studies/..)
    settings = [parse_setting(s) for s in a.setting] or [
        ("auto", root, {}), ("blas1", root, {"OPENBLAS_NUM_THREADS": "1", "NPGAN_NUM_THREADS": "2"})]
    presets = a.presets.split(",")
    busy = subprocess.Popen([sys.executable, "-c", "while 1: pass"]) if a.busy else None
    res: dict = {(s[0], p): [] for s in settings for p in presets}
    try:
        for r in range(a.rounds):
            for p in presets:
                for name, sroot, env in settings:
                    res[name, p].append(run_once(sroot, env, p, max(1, round(STEPS[p] * a.steps))))
                    w, c = res[name, p][-1]
                    print(f"round {r}: {p:13s} {name:8s} {w:6.1f} s wall {c:6.1f} s cpu", flush=True)
    finally:
        if busy is not None:
            busy.kill()
            busy.wait()
    print(f"\nmedians over {a.rounds} rounds{' beside a busy process' if busy else ''}:")
    for p in presets:
        for name, _, _ in settings:
            w = statistics.median(x[0] for x in res[name, p])
            c = statistics.median(x[1] for x in res[name, p])
            print(f"{p:13s} ({max(1, round(STEPS[p] * a.steps)):5d} steps) {name:8s} {w:6.1f} s wall {c:6.1f} s cpu")
    return 0


if __name__ == "__main__":
    sys.exit(main())
