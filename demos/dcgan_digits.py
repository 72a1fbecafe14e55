"""DCGAN on scikit-learn's 8×8 digits (preset "digits-dcgan"): architecture, samples, losses, metrics.

G: z (100, 1, 1) → ConvT k2 → (128, 2, 2) → ConvT k4 s2 → (64, 4, 4) → ConvT k4 s2 → (1, 8, 8), BatchNorm + ReLU
between, tanh at the end; D mirrors it with strided convolutions and LeakyReLU(0.2) down to one logit; weights
~ N(0, 0.02); Adam lr 2e-4, betas (0.5, 0.999); batch 64. To fit 3 minutes on 2 CPU cores the full run trains
2,000 of the preset's 3,000 steps (``--steps 3000`` for all of them). See demos/image_gan.py for the metrics.

Run: python demos/dcgan_digits.py [--quick] [--steps N] [--out DIR] [--device gpu]
"""

from __future__ import annotations

import sys
from typing import Any

from demo_utils import parser
from image_gan import run_image_demo

NAME = "dcgan_digits"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = parser(NAME, __doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=None, help="training steps (default 2000; quick 10)")
    args = p.parse_args(argv)
    steps = args.steps or (10 if args.quick else 2000)
    return run_image_demo(NAME, args, "digits-dcgan", steps, eval_samples=300 if args.quick else None)


if __name__ == "__main__":
    main(sys.argv[1:])
