"""Regenerate the README's gallery: run the demos and copy their chosen figures to docs/gallery/.

    python demos/make_gallery.py                 # every demo in full (about 7 minutes on 2 CPU cores)
    python demos/make_gallery.py --only entropy  # one demo
    python demos/make_gallery.py --quick         # tiny runs (a check of the pipeline, not figures to commit)
    python demos/make_gallery.py --mnist-dir DIR # also the MNIST demo (needs the IDX files)

Each demo runs in its own process (``python demos/NAME.py --out demo_out/NAME``); its figures are then copied
to docs/gallery/ as 256-colour PNGs (Pillow, which matplotlib installs) so that each stays well under 150 KB.
Prints every demo's wall time.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GALLERY = ROOT / "docs" / "gallery"

# demo -> [(figure written by the demo, name in docs/gallery/)]
FIGURES = {
    "bce_and_saturation": [("saturation.png", "bce_and_saturation.png")],
    "optimal_discriminator": [("optimal_discriminator.png", "optimal_discriminator.png")],
    "entropy": [("entropy.png", "entropy.png")],
    "mode_collapse": [("mode_collapse_ring8.png", "mode_collapse_ring8.png"),
                      ("mode_collapse_grid25.png", "mode_collapse_grid25.png")],
    "mlp_gan_digits": [("samples_over_training.png", "mlp_gan_digits_samples.png")],
    "dcgan_digits": [("samples_over_training.png", "dcgan_digits_samples.png"),
                     ("losses.png", "dcgan_digits_losses.png")],
    "dirac_gan": [("dirac_fields.png", "dirac_gan_fields.png"), ("dirac_distance.png", "dirac_gan_distance.png")],
    "mnist": [("samples_over_training.png", "mnist_samples.png")],
}
MAX_BYTES = 150_000


def compact_png(src: Path, dst: Path) -> int:
    """Copy ``src`` to ``dst`` as a 256-colour PNG (plots need no more); returns the size in bytes."""
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - Pillow comes with matplotlib
        shutil.copyfile(src, dst)
        return dst.stat().st_size
    with Image.open(src) as im:
        im.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(dst, optimize=True)
    return dst.stat().st_size


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="demos/make_gallery.py", description=__doc__.splitlines()[0])
    p.add_argument("--only", nargs="+", choices=sorted(FIGURES), help="run only these demos")
    p.add_argument("--quick", action="store_true", help="tiny runs (checks the pipeline; do not commit these)")
    p.add_argument("--mnist-dir", default=None, help="MNIST IDX folder: also run demos/mnist.py")
    p.add_argument("--gallery", default=str(GALLERY), help="where the figures go (default docs/gallery)")
    args = p.parse_args(argv)
    names = args.only or [n for n in FIGURES if n != "mnist" or args.mnist_dir]
    if "mnist" in names and not args.mnist_dir:
        p.error("the mnist demo needs --mnist-dir DIR")
    gallery = Path(args.gallery)
    gallery.mkdir(parents=True, exist_ok=True)
    total = time.perf_counter()
    for name in names:
        out = ROOT / "demo_out" / name
        cmd = [sys.executable, str(ROOT / "demos" / f"{name}.py"), "--out", str(out)]
        if args.quick:
            cmd.append("--quick")
        if name == "mnist":
            cmd += ["--data-dir", args.mnist_dir]
        print(f"== {' '.join(cmd[1:])}", flush=True)
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=ROOT, env=os.environ.copy())
        if proc.returncode != 0:
            print(f"make_gallery: {name} failed with exit code {proc.returncode}", file=sys.stderr)
            return proc.returncode
        print(f"== {name}: {time.perf_counter() - t0:.1f} s", flush=True)
        for src, dst in FIGURES[name]:
            size = compact_png(out / src, gallery / dst)
            flag = "" if size <= MAX_BYTES else f"  (over {MAX_BYTES // 1000} KB!)"
            print(f"   {gallery / dst}: {size / 1000:.0f} KB{flag}")
    print(f"make_gallery: done in {time.perf_counter() - total:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
