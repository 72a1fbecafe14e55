"""What drawing a batch from an ImageFolder cache costs beside one DCGAN 64×64×3 train step (the target: ≤ 5 %).

    python benchmarks/batch_draw.py [--images 2048] [--batch 128] [--repeat 5] [--device cpu|gpu] [--json FILE]

Writes ``--images`` 64×64 RGB PNGs (the generated shapes) into a temporary folder, builds the ImageFolder
cache (uint8 (N, 3, 64, 64) memory map), then times, in alternation (bench.time_pair_ms: medians and the median
per-round ratio), one draw of a batch of ``--batch`` from the folder's seeded stream (rows in random order from
the memory map → float32 in [−1, 1] → Tensor on the device) against one train step of the write-up's DCGAN at
the same batch (cases_images). Prints both times and draw/step. The cache sits in the page cache here (a few
tens of MB); a cache larger than RAM adds the disk's random-read time to each draw.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

from bench import machine_line  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))


def make_folder(root: str, n: int, size: int = 64) -> None:
    """``n`` PNGs of the shapes data set at size×size under root (a few ms each)."""
    from PIL import Image

    from npgan.data.shapes import shapes_uint8

    x, _ = shapes_uint8(n, size, seed=0)
    for i in range(n):
        Image.fromarray(x[i].transpose(1, 2, 0)).save(os.path.join(root, f"{i:06d}.png"), compress_level=1)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=2048)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--device", default="cpu", choices=["cpu", "gpu"])
    ap.add_argument("--json", default=None, help="also write the figures here")
    args = ap.parse_args(argv)
    print(machine_line())  # the CPU, its SIMD flags and the BLAS kernel beside the figures
    if args.images < args.batch:
        ap.error(f"--images ({args.images}) must be at least --batch ({args.batch})")

    from bench import time_pair_ms
    from cases_images import dcgan_npgan

    import npgan
    from npgan.data.images import ImageFolder

    if args.device == "gpu":
        try:
            npgan.set_device("gpu")
        except npgan.DeviceError as exc:
            print(f"batch_draw.py: error: {exc}", file=sys.stderr)
            return 2
    with tempfile.TemporaryDirectory(prefix="npgan-batch-draw-") as root:
        make_folder(root, args.images)
        ds = ImageFolder(root, 64, 3, cache_dir=os.path.join(root, "cache"), progress=False)
        stream = ds.stream(args.batch)

        def draw() -> None:
            next(stream)

        npgan.manual_seed(0)
        step = dcgan_npgan(args.device, size=64, batch=args.batch)
        draw_ms, step_ms, ratio = time_pair_ms(draw, step, args.repeat, args.device)
        cache_mb = os.path.getsize(ds.cache_path) / 2**20
    out = {"images": args.images, "batch": args.batch, "device": args.device, "cache_MB": round(cache_mb, 1),
           "draw_ms": draw_ms, "dcgan64_step_ms": step_ms, "draw_over_step": ratio}
    print(f"draw a batch of {args.batch} at 64x64x3 from the ImageFolder cache ({args.images} images, "
          f"{cache_mb:.1f} MB): {draw_ms:.3f} ms")
    print(f"one DCGAN 64x64x3 train step, batch {args.batch} ({args.device}): {step_ms:.1f} ms")
    print(f"draw / step = {100 * ratio:.2f} % (target <= 5 %)")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
