"""A short DCGAN training run on the generated ``shapes`` (32×32×3), then the shapes classifier's metrics.

    python benchmarks/gpu_shapes_run.py OUT_DIR [--device gpu] [--steps 200] [--batch 64] [--width 64]

The 200-step shapes run of ``gpu_check.sh`` beside its ``npgan train --preset shapes-dcgan`` stage: a wider 32×32
DCGAN, timed step by step, outside the CLI. The DCGAN of cases_images (nz 100, ngf = ndf = ``--width``; G behind an
Unflatten so that it takes (B, 100) noise), DCGAN init, Adam lr 2e-4 betas (0.5, 0.999), :class:`npgan.gan.Trainer`
(non-saturating loss, D first), real batches from :class:`npgan.data.images.UInt8Images` over ``--data`` shapes
images (seed 0), all on ``--device``. Then ``--eval`` samples (batch-norm in batch-statistics mode, as in training)
are moved to the host and scored on the CPU: :func:`npgan.eval.metrics.classifier_metrics` with the shipped shapes
classifier (classes covered of 12, class KL, classifier score) and :func:`npgan.eval.metrics.colour_image_metrics`
(PRDC on 8×8 area-averaged pixels, per-channel mean/std) against fresh real shapes. 200 steps is a smoke run, not a
trained model: the figures say that the GPU path trains and is scored end to end, not how good shapes-dcgan gets.

Writes OUT_DIR/shapes_run.json (timings, the last logged losses, the metrics) and OUT_DIR/shapes_samples.png
(64 samples); prints one line per 50 steps. Exit status 0, 2 when the device cannot be used, 3 on divergence.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out_dir")
    ap.add_argument("--device", default="gpu", choices=["cpu", "gpu"])
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--width", type=int, default=64, help="ngf = ndf")
    ap.add_argument("--data", type=int, default=10000, help="training images")
    ap.add_argument("--eval", type=int, default=2000, help="samples scored")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    import numpy as np
    from cases_images import dcgan
    from PIL import Image

    import npgan
    from npgan import backend, nn, optim
    from npgan.data.images import UInt8Images
    from npgan.data.shapes import shapes, shapes_uint8
    from npgan.errors import DivergenceError
    from npgan.eval import metrics
    from npgan.eval.classifiers import shapes_classifier
    from npgan.eval.metrics import colour_image_metrics
    from npgan.eval.plots import grid_array
    from npgan.gan import TrainConfig, Trainer

    os.makedirs(args.out_dir, exist_ok=True)
    try:
        npgan.set_device(args.device)
    except npgan.DeviceError as exc:
        print(f"gpu_shapes_run.py: error: {exc}", file=sys.stderr)
        return 2
    npgan.manual_seed(args.seed)
    G0, D = dcgan(nn, 32, nz=100, ngf=args.width, ndf=args.width)
    G = nn.Sequential(nn.Unflatten(1, (100, 1, 1)), *G0)
    nn.init.dcgan_init(G)
    nn.init.dcgan_init(D)
    opt_g = optim.Adam(G.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_d = optim.Adam(D.parameters(), lr=2e-4, betas=(0.5, 0.999))
    images, labels = shapes_uint8(args.data, 32, seed=0)
    stream = UInt8Images(images, labels, seed=args.seed).stream(args.batch)
    trainer = Trainer(G, D, opt_g, opt_d, lambda step: next(stream),
                      TrainConfig(steps=args.steps, batch_size=args.batch, z_dim=100, lr=2e-4))

    t0 = time.perf_counter()
    try:
        trainer.step()  # the first step compiles the GPU kernels: timed apart
        backend.synchronize()
        first_s = time.perf_counter() - t0
        t1 = time.perf_counter()
        rows = trainer.flush()
        for s in range(2, args.steps + 1):
            trainer.step()
            if s % 50 == 0 or s == args.steps:
                rows += trainer.flush()
                r = rows[-1]
                print(f"step {s}/{args.steps}  Loss_D {r['loss_d']:.3f}  Loss_G {r['loss_g']:.3f}  "
                      f"D(x) {r['d_x']:.3f}  D(G(z)) {r['d_g_z']:.3f}  {time.perf_counter() - t0:.1f} s", flush=True)
        backend.synchronize()
    except DivergenceError as exc:
        print(f"gpu_shapes_run.py: diverged: {exc}", file=sys.stderr)
        return 3
    rest_s = time.perf_counter() - t1
    fake = backend.to_numpy(trainer.sample(n=args.eval).data)

    npgan.set_device("cpu")  # scoring on the host: the classifier and PRDC need no GPU
    clf = shapes_classifier()
    real = shapes(args.eval, 32, seed=12345)[0]
    scores = metrics.classifier_metrics(fake, clf)
    colour = colour_image_metrics(fake, real)
    real_scores = metrics.classifier_metrics(real, clf)
    Image.fromarray(np.rint(grid_array(fake[:64]) * 255).astype(np.uint8)).save(
        os.path.join(args.out_dir, "shapes_samples.png"))
    out = {
        "device": args.device, "steps": args.steps, "batch": args.batch, "width": args.width,
        "first_step_s": first_s, "ms_per_step_after_first": 1e3 * rest_s / max(1, args.steps - 1),
        "last": {k: (v if np.isfinite(v) else None) for k, v in rows[-1].items()},
        "finite": bool(all(np.isfinite([r["loss_d"], r["loss_g"]]).all() for r in rows)),
        "classifier": {k: v for k, v in scores.items() if k != "class_counts"},
        "class_counts": scores.get("class_counts"),
        "colour": colour,
        "real_reference": {k: real_scores[k] for k in ("classes_covered", "class_kl", "classifier_score")},
    }
    Path(args.out_dir, "shapes_run.json").write_text(json.dumps(out, indent=1, default=float))
    print(f"shapes run on {args.device}: {args.steps} steps, first {first_s:.1f} s, then "
          f"{out['ms_per_step_after_first']:.1f} ms/step; classes covered {scores['classes_covered']}/12, "
          f"class KL {scores['class_kl']:.3f}, classifier score {scores['classifier_score']:.2f}, "
          f"coverage {colour['coverage']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
