#!/usr/bin/env bash
# The GPU check of npgan: on a machine with an NVIDIA GPU where CuPy, PyTorch with CUDA and npgan's
# dependencies are installed (nothing is downloaded or installed), in under 8 minutes:
#   1. env      nvidia-smi, Python, NumPy, CuPy, torch versions                           (limit  15 s)
#   2. tests    the GPU-marked tests: python -m pytest -m gpu tests (test_gpu.py and every test
#               parametrised by the device fixture, on "gpu"); 4 xdist workers when xdist is there (limit 185 s)
#   3. dcgan64  benchmarks/bench.py --device gpu --only "DCGAN 64×64×3": the write-up's DCGAN train step at
#               batch 128, npgan on CuPy against torch on CUDA, first and alone           (limit  40 s)
#   4. bench    benchmarks/bench.py --device gpu: every case on CuPy against torch CUDA, cases_gpu's GPU
#               cases among them                                                          (limit  90 s)
#   5. draw     benchmarks/batch_draw.py --device gpu: drawing a batch of 128 from an ImageFolder cache
#               against one DCGAN 64×64×3 step                                            (limit  35 s)
#   6. shapes   benchmarks/gpu_shapes_run.py: a 200-step 32×32 DCGAN run (width 64) on the generated shapes,
#               then the shapes classifier's metrics and colour PRDC                      (limit  50 s)
#   7. preset   npgan train --preset shapes-dcgan --steps 200 --device gpu: the preset through the CLI (run
#               directory, checkpoints, sample grids, metrics.json) in DIR/shapes_preset  (limit  40 s)
#   8. mpi2     npgan train --preset shapes-dcgan --steps 100 --device gpu --nproc 2: one run on two ranks
#               (gpu:(local rank mod GPUs) each; needs the mpi extra: mpi4py and an MPI); its first line says
#               whether buffers go to a CUDA-aware MPI or through host memory  (limit  60 s)
# Each stage runs under `timeout`; a stage that fails or times out does not stop the next ones.
#
#   bash benchmarks/gpu_check.sh DIR
#
# writes DIR/gpu_check.log (everything printed), DIR/gpu_check.json (per stage: exit status, seconds, timed out;
# the test counts; the benchmark table; the batch-draw figures; the shapes run), DIR/gpu_tests.xml (JUnit),
# DIR/bench_dcgan64_gpu.json, DIR/bench_gpu.json, DIR/batch_draw_gpu.json, DIR/shapes_run.json,
# DIR/shapes_samples.png and the run directories DIR/shapes_preset and DIR/shapes_mpi2 (replaced when the script
# runs again).
# Exit status: 0 when every stage passed, 1 when one failed or timed out, 2 for a usage error.
# Without a GPU (no nvidia-smi, nvidia-smi sees no device, or CuPy cannot use one) it prints one line saying so,
# writes nothing and exits 0. PYTHON selects the interpreter (default: python).
set -u

if [ $# -ne 1 ] || [ -z "$1" ]; then
    echo "usage: bash benchmarks/gpu_check.sh DIR" >&2
    exit 2
fi
DIR=$1
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PY=${PYTHON:-python}

if ! command -v nvidia-smi >/dev/null 2>&1; then
    echo "gpu_check.sh: no NVIDIA GPU here (nvidia-smi not found); nothing to check"
    exit 0
fi
if ! nvidia-smi -L >/dev/null 2>&1; then
    echo "gpu_check.sh: no NVIDIA GPU here (nvidia-smi -L sees no device); nothing to check"
    exit 0
fi
if ! why=$("$PY" -c "import cupy; n = cupy.cuda.runtime.getDeviceCount(); assert n > 0, 'no device'" 2>&1); then
    why=$(printf '%s' "$why" | tail -n 1 | cut -c1-160)
    echo "gpu_check.sh: no GPU usable from CuPy ($why); nothing to check"
    exit 0
fi

mkdir -p "$DIR" || exit 2
DIR=$(cd "$DIR" && pwd)
LOG=$DIR/gpu_check.log
STAGES=$DIR/.stages.tsv
: > "$LOG"
: > "$STAGES"
cd "$ROOT" || exit 2
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1

stage() {  # stage NAME LIMIT_S COMMAND...: run under timeout, output to the terminal and the log
    local name=$1 limit=$2
    shift 2
    echo "== $name (limit ${limit} s): $*" | tee -a "$LOG"
    local t0=$SECONDS
    timeout --kill-after=5 "$limit" "$@" 2>&1 | tee -a "$LOG"
    local rc=${PIPESTATUS[0]}
    local dt=$((SECONDS - t0))
    echo "== $name: exit status $rc after $dt s" | tee -a "$LOG"
    printf '%s\t%s\t%s\t%s\n' "$name" "$rc" "$dt" "$limit" >> "$STAGES"
}

VERSIONS='import sys, numpy, cupy, torch
print("python", sys.version.split()[0], "| numpy", numpy.__version__, "| cupy", cupy.__version__,
      "| torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())'
stage env 15 bash -c 'nvidia-smi && "$0" -c "$1"' "$PY" "$VERSIONS"

XDIST=()
if "$PY" -c "import xdist" >/dev/null 2>&1; then
    XDIST=(-n 4)
fi
stage tests 185 "$PY" -m pytest -q -m gpu -p no:cacheprovider ${XDIST[@]+"${XDIST[@]}"} \
    --junitxml="$DIR/gpu_tests.xml" tests
stage dcgan64 40 "$PY" benchmarks/bench.py --device gpu --repeat 5 --only "DCGAN 64×64×3" \
    --json "$DIR/bench_dcgan64_gpu.json"
stage bench 90 "$PY" benchmarks/bench.py --device gpu --repeat 5 --json "$DIR/bench_gpu.json"
stage draw 35 "$PY" benchmarks/batch_draw.py --device gpu --repeat 5 --json "$DIR/batch_draw_gpu.json"
stage shapes 50 "$PY" benchmarks/gpu_shapes_run.py "$DIR" --device gpu --steps 200
rm -rf "$DIR/shapes_preset"
stage preset 40 "$PY" -m npgan.run.cli train --preset shapes-dcgan --steps 200 --device gpu --no-progress \
    --out "$DIR/shapes_preset"
rm -rf "$DIR/shapes_mpi2"
stage mpi2 60 "$PY" -m npgan.run.cli train --preset shapes-dcgan --steps 100 --device gpu --nproc 2 --no-progress \
    --out "$DIR/shapes_mpi2"

timeout 20 "$PY" - "$DIR" <<'EOF' 2>&1 | tee -a "$LOG"
import json, os, subprocess, sys
import xml.etree.ElementTree as ET

d = sys.argv[1]
out = {"stages": {}}
for line in open(os.path.join(d, ".stages.tsv")):
    name, rc, secs, limit = line.rstrip("\n").split("\t")
    out["stages"][name] = {"exit_status": int(rc), "seconds": int(secs), "limit_s": int(limit),
                           "timed_out": int(rc) in (124, 137)}
try:
    out["gpu"] = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
                                capture_output=True, text=True, timeout=10).stdout.strip()
except (OSError, subprocess.SubprocessError) as exc:
    out["gpu"] = f"unknown ({exc})"
try:
    root = ET.parse(os.path.join(d, "gpu_tests.xml")).getroot()
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    out["tests"] = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    out["tests"]["ran"] = out["tests"]["tests"] - out["tests"]["skipped"]  # 0: CuPy saw no GPU after all
    out["tests"]["failed"] = [f"{c.get('classname')}::{c.get('name')}" for c in suite.iter("testcase")
                              if c.find("failure") is not None or c.find("error") is not None]
except (OSError, ET.ParseError, AttributeError) as exc:
    out["tests"] = f"no JUnit report ({type(exc).__name__}: {exc})"
for key, name in (("dcgan64", "bench_dcgan64_gpu.json"), ("bench", "bench_gpu.json"),
                  ("batch_draw", "batch_draw_gpu.json"), ("shapes_run", "shapes_run.json"),
                  ("shapes_preset", os.path.join("shapes_preset", "metrics.json")),
                  ("shapes_mpi2", os.path.join("shapes_mpi2", "metrics.json"))):
    try:
        with open(os.path.join(d, name)) as f:
            out[key] = json.load(f)
    except (OSError, ValueError) as exc:
        out[key] = f"missing ({type(exc).__name__})"
out["all_passed"] = (all(s["exit_status"] == 0 for s in out["stages"].values())
                     and isinstance(out["tests"], dict) and out["tests"]["ran"] > 0)
with open(os.path.join(d, "gpu_check.json"), "w") as f:
    json.dump(out, f, indent=1)
print("gpu_check:", ", ".join(f"{k} {'ok' if v['exit_status'] == 0 else 'TIMED OUT' if v['timed_out'] else 'FAILED'}"
                              f" ({v['seconds']} s)" for k, v in out["stages"].items()),
      f"-> {os.path.join(d, 'gpu_check.json')}")
sys.exit(0 if out["all_passed"] else 1)
EOF
status=${PIPESTATUS[0]}
rm -f "$STAGES"
exit "$status"
