"""The image GAN demos' shared body: a preset's architecture, samples over training, loss curves, metrics.

Used by demos/mlp_gan_digits.py, demos/dcgan_digits.py and demos/mnist.py. A run is an npgan preset
(npgan.run.presets.make_config) whose parts npgan.run.presets.build makes and whose Trainer the demo drives step by
step, so that it can take pictures of the same fixed noise at chosen steps; nothing is written to disk but the figures.

Metrics (npgan.eval.metrics.image_metrics) of the untrained generator, the trained one and real images:
    classes_covered    digit classes the classifier predicts for at least one sample (of 10)
    class_kl           KL(histogram of predicted classes ‖ uniform): 0 when the classes are balanced
    classifier_score   exp(E_x KL(p(y|x) ‖ p(y))), the Inception-score formula: 1 (collapse) … 10
    precision/recall   share of fakes inside the real data's k-NN balls / of reals inside the fakes' (pixels)
    density/coverage   Naeem et al. 2020's robust versions of the two
"""

from __future__ import annotations

from typing import Any

import numpy as np
from demo_utils import Timer, finish, heading, plt, save, setup, show, table

import npgan
from npgan import backend
from npgan.eval import plots
from npgan.run.experiment import evaluate, side_noise
from npgan.run.presets import build

METRIC_KEYS = ("classes_covered", "class_kl", "classifier_score", "precision", "recall", "density", "coverage")

LITERATURE = {
    "mlp": "MLP GAN (Goodfellow et al. 2014): fully connected G and D, ReLU in G, LeakyReLU(0.2) in D, tanh "
           "output; Adam lr 2e-4, beta1 0.5 (the DCGAN paper's optimiser, the usual choice since).",
    "mlp_bn": "MLP GAN with BatchNorm1d blocks in G (as in the PyTorch-GAN collection's GAN example, with eps and "
              "momentum given by keyword); LeakyReLU(0.2), tanh output; here with the KDE entropy term on G's "
              "batch (lambda 0.1, Silverman bandwidth), which keeps it from collapsing on the 1,438 digits.",
    "dcgan": "DCGAN (Radford et al. 2016): no pooling or dense hidden layers; G upsamples with strided transposed "
             "convolutions + BatchNorm + ReLU and ends in tanh; D downsamples with strided convolutions + "
             "LeakyReLU(0.2), BatchNorm except on its first layer; weights ~ N(0, 0.02); Adam lr 2e-4, beta1 0.5.",
}


def architecture(cfg: Any, G: Any, D: Any) -> dict[str, int]:
    """Print G and D with the shape after every layer; returns the parameter counts."""
    heading(f"Architecture: preset {cfg.preset!r} (model {cfg.model!r})")
    print("  " + LITERATURE[cfg.model])
    counts = {}
    x: Any = npgan.randn(2, cfg.train.z_dim)
    for name, net in (("G", G), ("D", D)):
        n = sum(int(p.size) for p in net.parameters())
        counts[f"params_{name}"] = n
        print(f"\n  {name}: {n:,} parameters;  input {tuple(x.shape)}")
        net.eval()
        with npgan.no_grad():
            for k, layer in enumerate(net):
                x = layer(x)
                print(f"    ({k}) {repr(layer).splitlines()[0]:<80s} -> {tuple(x.shape)}")
        net.train()
    return counts


def _metrics(cfg: Any, trainer: Any) -> dict[str, Any]:
    m = evaluate(cfg, trainer)
    return {k: m[k] for k in METRIC_KEYS}


def _real_metrics(cfg: Any, data_dir: str | None) -> dict[str, Any]:
    """The same metrics for real training images against the test split: the ceiling a generator aims at."""
    from npgan import data
    from npgan.eval import classifiers, metrics

    n = cfg.eval_samples
    if cfg.data == "digits":
        train, _ = data.load_digits("train")
        test, _ = data.load_digits("test")
        clf = classifiers.digits_classifier()
    else:
        train, _ = data.load_mnist(data_dir, "train")
        test, _ = data.load_mnist(data_dir, "test")
        clf = classifiers.mnist_classifier(data_dir)
    m = metrics.image_metrics(train[:n], test, clf)
    return {k: m[k] for k in METRIC_KEYS}


def run_image_demo(name: str, args: Any, preset: str, steps: int, note: str = "",
                   data_dir: str | None = None, eval_samples: int | None = None) -> dict[str, Any]:
    """Train ``preset`` for ``steps`` steps with pictures along the way; print and return the numbers."""
    from npgan.run.presets import make_config

    out_dir = setup(name, args)
    timer = Timer()
    cfg = make_config(preset)
    cfg.seed, cfg.device = args.seed, args.device
    if data_dir is not None:
        cfg.data_dir = data_dir
    preset_steps = cfg.train.steps
    cfg.train.steps = steps
    if eval_samples is not None:
        cfg.eval_samples = eval_samples
    print(f"{name}: preset {preset!r}, {steps} steps (the preset trains {preset_steps}){note}, batch "
          f"{cfg.train.batch_size}, z {cfg.train.z_dim}, Adam lr {cfg.train.lr} betas ({cfg.beta1}, {cfg.beta2}), "
          f"{cfg.train.loss} loss, seed {cfg.seed}")
    G, D, _, _, trainer = build(cfg)  # on the device and seed that setup() chose (cfg.device, cfg.seed)
    res: dict[str, Any] = {"preset": preset, "steps": steps}
    res.update(architecture(cfg, G, D))

    snap = sorted({int(round(steps * f)) for f in (0, 0.05, 0.15, 0.4, 1.0)})
    heading(f"Training {steps} steps")
    res["untrained"] = _metrics(cfg, trainer)
    z = side_noise(cfg, 36, tag=7)
    shots, history = [], []
    log_every = max(1, steps // 10)
    for s in range(steps + 1):
        if s in snap:
            shots.append((s, backend.to_numpy(trainer.sample(z).data)))
        if s == steps:
            break
        trainer.step()
        if (s + 1) % log_every == 0 or s + 1 == steps:
            rows = trainer.flush()
            history.extend(rows)
            r = rows[-1]
            adv = f" (L_adv {_adversarial(r):.3f})" if r["entropy_weight"] > 0 else ""
            print(f"  step {r['step']:>5d}  loss_D {r['loss_d']:.3f}  loss_G {r['loss_g']:.3f}{adv}  "
                  f"D(x) {r['d_x']:.2f}  D(G(z)) {r['d_g_z']:.2f}  |grad G| {r['grad_norm_g']:.2f}")
    res["trained"] = _metrics(cfg, trainer)
    res["real"] = _real_metrics(cfg, data_dir)
    res["final_loss_d"] = float(np.mean([r["loss_d"] for r in history[-max(1, len(history) // 10):]]))
    tail = history[-max(1, len(history) // 10):]
    res["final_loss_g"] = float(np.mean([r["loss_g"] for r in tail]))
    # loss_G = L_adv − λ·H: the adversarial part alone is what has an equilibrium value (ln 2 for the
    # non-saturating loss); with the entropy term, loss_G itself sits λ·H below it
    res["final_loss_g_adv"] = float(np.mean([_adversarial(r) for r in tail]))
    res["entropy_weight"] = float(tail[-1]["entropy_weight"])
    res["steps_per_s"] = steps / max(timer(), 1e-9)

    heading(f"Image metrics ({cfg.eval_samples} samples; real = training images against the test split)")
    table(("metric", "untrained G", f"G after {steps} steps", "real images"),
          [(k, res["untrained"][k], res["trained"][k], res["real"][k]) for k in METRIC_KEYS])
    bce = cfg.train.loss in ("minimax", "non_saturating")
    show("loss_D, mean of the last 10% of steps", res["final_loss_d"],
         "2 ln 2 = 1.386 at the equilibrium D = 1/2" if bce else "")
    if res["entropy_weight"] > 0:
        show("loss_G = L_adv - lambda*H, mean of the last 10% of steps", res["final_loss_g"],
             f"lambda = {res['entropy_weight']:g}: includes -lambda*H, no equilibrium value")
    show("L_adv = -E log D(G(z)) (loss_G + lambda*H), same steps" if cfg.train.loss == "non_saturating"
         else "L_adv (loss_G + lambda*H), same steps", res["final_loss_g_adv"],
         "ln 2 = 0.693 at the equilibrium D = 1/2" if cfg.train.loss == "non_saturating" else "")
    if args.quick:
        print(f"  quick mode: {steps} steps are too short to show training near the equilibrium or digit-like "
              f"samples; the losses and metrics above only show that training runs. Run without --quick.")

    pyplot = plt()
    real = _real_images(cfg, data_dir, 36)
    fig, axes = pyplot.subplots(1, len(shots) + 1, figsize=(2.4 * (len(shots) + 1), 2.7))
    for ax, (s, x) in zip(axes, shots):
        ax.imshow(plots.grid_array(x, ncol=6), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        ax.set_title(f"step {s}", fontsize=9)
        ax.axis("off")
    axes[-1].imshow(plots.grid_array(real, ncol=6), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    axes[-1].set_title("real", fontsize=9)
    axes[-1].axis("off")
    fig.suptitle(f"{preset}: G(z) for the same 36 z over training", fontsize=10)
    fig.tight_layout()
    save(fig, out_dir / "samples_over_training.png")
    plots.loss_curves(history, out_dir / "losses.png", smooth=max(1, min(50, len(history) // 20)))
    print(f"  wrote {out_dir / 'losses.png'}")
    return finish(name, res, timer, out_dir)


def _adversarial(row: dict[str, float]) -> float:
    """loss_G's adversarial part L_adv = loss_G + λ·H of one history row (loss_G itself when λ = 0)."""
    lam, h = row["entropy_weight"], row["entropy"]
    return row["loss_g"] + lam * h if lam > 0 else row["loss_g"]


def _real_images(cfg: Any, data_dir: str | None, n: int) -> Any:
    from npgan import data

    if cfg.data == "digits":
        x, _ = data.load_digits("test")
    else:
        x, _ = data.load_mnist(data_dir, "test")
    return backend.to_numpy(x[:n].data)
