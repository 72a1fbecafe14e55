"""An MLP GAN on scikit-learn's 8×8 digits (preset "digits-mlp"): architecture, samples, losses, metrics.

G: z (100) → 128 → 256 → 64 pixels (ReLU, ReLU, tanh); D: 64 → 256 → 128 → 1 logit (LeakyReLU 0.2); the
non-saturating loss; Adam lr 2e-4, betas (0.5, 0.999); batch 64. The full run trains the preset's 4,000 steps.
See demos/image_gan.py for what the metrics mean.

Run: python demos/mlp_gan_digits.py [--quick] [--steps N] [--out DIR] [--device gpu]
"""

from __future__ import annotations

import sys
from typing import Any

from demo_utils import parser
from image_gan import run_image_demo

NAME = "mlp_gan_digits"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = parser(NAME, __doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=None, help="training steps (default: the preset's 4000; quick 20)")
    args = p.parse_args(argv)
    steps = args.steps or (20 if args.quick else 4000)
    return run_image_demo(NAME, args, "digits-mlp", steps, eval_samples=300 if args.quick else None)


if __name__ == "__main__":
    main(sys.argv[1:])
