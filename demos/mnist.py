"""An MLP GAN or DCGAN on MNIST from your IDX files (presets "mnist-mlp", "mnist-dcgan").

Needs ``--data-dir DIR``: a folder with the four MNIST IDX files (train-images-idx3-ubyte, train-labels-idx1-ubyte,
t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte, raw or .gz). Get them once with
``python -c "import npgan.data as d; d.download_mnist('DIR')"`` (checked against their SHA-256).

The architectures are the literature's (see demos/image_gan.py and npgan/run/presets.py): the MLP GAN
(z → 128 → 256 → 784, D 784 → 256 → 128 → 1) and DCGAN (ConvT k7 → 7×7, k4 s2 → 14×14, k4 s2 → 28×28; D mirrors
it). To fit 3 minutes on 2 CPU cores the defaults train 3,000 steps of the MLP preset's 10,000 and 300 of the
DCGAN preset's 5,000 (``--steps N`` for more). The metrics use a 784 → 256 → 10 classifier that npgan trains on
your training files on first use (about half a minute) and caches (``$NPGAN_CACHE``, default ~/.cache/npgan).

Run: python demos/mnist.py --data-dir DIR [--model mlp|dcgan] [--steps N] [--quick] [--out DIR] [--device gpu]
"""

from __future__ import annotations

import os
import sys
from typing import Any

from demo_utils import parser
from image_gan import run_image_demo

from npgan import data

NAME = "mnist"
DEFAULT_STEPS = {"mlp": 3000, "dcgan": 300}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = parser(NAME, __doc__.splitlines()[0])
    p.add_argument("--data-dir", required=True, help="folder with the four MNIST IDX files (raw or .gz)")
    p.add_argument("--model", choices=("mlp", "dcgan"), default="mlp", help="architecture (default mlp)")
    p.add_argument("--steps", type=int, default=None, help="training steps (default: mlp 3000, dcgan 300; quick 10)")
    args = p.parse_args(argv)
    files = [n for split in ("train", "test") for n in data.MNIST_FILES[split]]
    for name in files:  # fail before anything runs, naming the folder and the files
        if not any(os.path.isfile(os.path.join(args.data_dir, name + ext)) for ext in ("", ".gz")):
            raise SystemExit(
                f"{NAME}: {name} (or {name}.gz) not found in --data-dir {args.data_dir!r}; the folder must hold the "
                f"four MNIST IDX files {', '.join(files)}. "
                f"Get them with: python -c \"import npgan.data as d; d.download_mnist({args.data_dir!r})\"")
    for split in ("train", "test"):
        try:
            data.load_mnist(args.data_dir, split)
        except ValueError as exc:  # a truncated or foreign file: the loader's message names it
            raise SystemExit(f"{NAME}: {exc}") from None
    steps = args.steps or (10 if args.quick else DEFAULT_STEPS[args.model])
    return run_image_demo(NAME, args, f"mnist-{args.model}", steps, data_dir=args.data_dir,
                          eval_samples=200 if args.quick else None)

if __name__ == "__main__":
    main(sys.argv[1:])
