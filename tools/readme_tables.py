"""Write the README's presets and options tables from the code, so that they cannot drift from it.

    python tools/readme_tables.py           # rewrite the tables in README.md (between their marker comments)
    python tools/readme_tables.py --check   # exit 1, naming the stale table, when README.md differs

The presets table is rendered from :data:`npgan.run.presets.PRESETS`, the options tables from the parser of the
``npgan`` command (:func:`npgan.run.cli.build_parser`): every option the parser has, with its help text. Each table
sits between ``<!-- NAME:start -->`` and ``<!-- NAME:end -->`` in README.md; ``tests/test_readme.py`` renders them
again and compares.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"

#: RunConfig / TrainConfig fields the presets table shows in its own columns, or leaves out on purpose (how often a
#: run logs, checkpoints, draws sample grids, and how many samples its metrics use). Any other field a preset sets
#: away from its default is listed in the last column as ``name = value``.
SHOWN = {"preset", "data", "data_dir", "image_size", "channels", "model", "hidden", "d_hidden", "optimizer", "beta1",
         "beta2", "steps", "batch_size", "z_dim", "lr", "lr_final", "loss", "d_steps", "entropy_weight",
         "entropy_weight_final", "bandwidth", "gp", "gp_weight", "gp_every", "reuse_fake"}
LEFT_OUT = {"log_every", "checkpoint_every", "sample_every", "eval_samples"}


def _cell(text: str) -> str:
    """Text that stays inside one markdown table cell: no newline, and '|' escaped."""
    return " ".join(str(text).split()).replace("|", "\\|")


def _num(x: float) -> str:
    """1e-3, 2.5e-4, 0.5, 10: scientific below 0.01, as the presets' code writes learning rates."""
    if x and abs(x) < 0.01:
        mantissa, exponent = f"{x:e}".split("e")
        return f"{float(mantissa):g}e{int(exponent)}"
    return f"{x:g}"


def _ordinal(k: int) -> str:
    return f"{k}{'th' if 10 <= k % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(k % 10, 'th')}"


def presets_table() -> str:
    """The presets as a markdown table, one row each, from their RunConfig."""
    from npgan.run.config import MIXTURE_DATASETS, RunConfig
    from npgan.run.presets import PRESETS, image_shape

    default = RunConfig()
    rows = ["| preset | data | G and D (width) | z | steps | batch | optimizer, lr | also |",
            "|---|---|---|---|---|---|---|---|"]
    for name, cfg in PRESETS.items():
        t = cfg.train
        if cfg.data in MIXTURE_DATASETS:
            data = f"{cfg.data} (2-D)"
        else:
            c, h, w = image_shape(cfg)
            data = f"{cfg.data} {c}×{h}×{w}" + (" (`--data-dir`)" if cfg.data in ("folder", "mnist", "cifar10") else "")
        width = f"{cfg.hidden}" + (f", D {cfg.d_hidden}" if cfg.d_hidden else "")
        opt = cfg.optimizer + (f" ({_num(cfg.beta1)}, {_num(cfg.beta2)})" if cfg.optimizer == "adam" else "")
        lr = _num(t.lr) + (f" → {_num(t.lr_final)}" if t.lr_final is not None else "")
        also = []
        if t.loss != "non_saturating":
            also.append(f"loss {t.loss}")
        if t.d_steps != 1:
            also.append(f"{t.d_steps} D steps")
        if t.entropy_weight:
            fin = f" → {_num(t.entropy_weight_final)}" if t.entropy_weight_final is not None else ""
            bw = _num(t.bandwidth) if isinstance(t.bandwidth, (int, float)) else t.bandwidth
            also.append(f"KDE entropy λ {_num(t.entropy_weight)}{fin}, σ {bw}")
        if t.gp:
            every = f" every {_ordinal(t.gp_every)} D step" if t.gp_every > 1 else ""
            also.append(f"{t.gp.upper()} γ {_num(t.gp_weight)}{every}")
        if t.reuse_fake:
            also.append("reuse_fake")
        for obj, ref in ((cfg, default), (t, default.train)):
            for f in dataclasses.fields(obj):
                if f.name in SHOWN or f.name in LEFT_OUT or f.name == "train":
                    continue
                if getattr(obj, f.name) != getattr(ref, f.name):
                    also.append(f"{f.name} = {getattr(obj, f.name)}")
        rows.append(f"| `{name}` | {_cell(data)} | {cfg.model}, {_cell(width)} | {t.z_dim} | {t.steps:,} | "
                    f"{t.batch_size} | {_cell(opt)}, {_cell(lr)} | {_cell('; '.join(also))} |")
    return "\n".join(rows)


def _invocation(action: argparse.Action) -> str:
    """How an option is written: '--steps N', '--loss {a,b}', '--reuse-fake / --no-reuse-fake', or 'DIR'."""
    if not action.option_strings:
        name = str(action.metavar or action.dest).upper()
        return f"[{name}]" if action.nargs == "?" else name
    if action.nargs == 0:
        return " / ".join(action.option_strings)
    if action.metavar is not None:
        value = action.metavar if isinstance(action.metavar, str) else " ".join(action.metavar)
    elif action.choices is not None:
        value = "{" + ",".join(map(str, action.choices)) + "}"
    else:
        value = action.dest.upper()
    return " / ".join(f"{s} {value}" for s in action.option_strings)


def _help(action: argparse.Action, prog: str) -> str:
    text = action.help or ""
    if "%" in text:  # argparse's own expansion: %(default)s, %(choices)s, %(prog)s
        params = dict(vars(action), prog=prog)
        if params.get("choices") is not None:
            params["choices"] = ", ".join(map(str, params["choices"]))
        text = text % params
    if action.required and action.option_strings:
        text = "(required) " + text
    return text


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    from npgan.run.cli import build_parser

    parser = build_parser()
    for action in parser._actions:  # argparse has no public accessor for its actions or sub-commands
        if action.nargs == argparse.PARSER:
            return dict(action.choices)
    raise RuntimeError("npgan's parser has no sub-commands")


def _rows(parser: argparse.ArgumentParser) -> list[tuple[str, str]]:
    return [(_invocation(a), _help(a, parser.prog)) for a in parser._actions
            if a.dest != "help" and a.help != argparse.SUPPRESS]


def train_options_table() -> str:
    """Every option of ``npgan train``, in the parser's order, with its help text."""
    rows = ["| option | what it does |", "|---|---|"]
    rows += [f"| `{_cell(inv)}` | {_cell(text)} |" for inv, text in _rows(_subparsers()["train"])]
    return "\n".join(rows)


def command_options_table() -> str:
    """The other commands (everything but ``train``), one row each: every argument and option with its help text."""
    rows = ["| command | arguments and options |", "|---|---|"]
    for name, parser in _subparsers().items():
        if name == "train":
            continue
        cells = "<br>".join(f"`{_cell(inv)}`: {_cell(text)}" for inv, text in _rows(parser))
        rows.append(f"| `npgan {name}` | {cells} |")
    return "\n".join(rows)


#: marker name -> renderer; README.md holds ``<!-- NAME:start -->`` ... ``<!-- NAME:end -->`` for each
TABLES = {"presets-table": presets_table, "train-options-table": train_options_table,
          "command-options-table": command_options_table}
REFRESH = "python tools/readme_tables.py"


def span(text: str, name: str) -> tuple[int, int]:
    """(start, end) of the text between the two markers of table ``name``; ValueError when they are missing."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    i = text.find(start)
    j = text.find(end, i + len(start)) if i >= 0 else -1
    if i < 0 or j < 0:
        raise ValueError(f"README.md lacks the markers {start} ... {end}")
    return i + len(start), j


def fresh(name: str) -> str:
    """What belongs between the markers of table ``name``: the table on lines of its own."""
    return "\n" + TABLES[name]() + "\n"


def render(text: str) -> str:
    """``text`` (README.md's) with every table replaced by a fresh rendering."""
    for name in TABLES:
        i, j = span(text, name)
        text = text[:i] + fresh(name) + text[j:]
    return text


def stale(text: str) -> list[str]:
    """Names of the tables in ``text`` that differ from a fresh rendering."""
    return [name for name in TABLES if text[slice(*span(text, name))] != fresh(name)]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Write README.md's presets and options tables from the code.")
    p.add_argument("--check", action="store_true", help="only compare; exit 1 naming the stale tables")
    a = p.parse_args(argv)
    text = README.read_text(encoding="utf-8")
    if a.check:
        old = stale(text)
        if old:
            print(f"README.md: stale {', '.join(old)}: run {REFRESH}", file=sys.stderr)
            return 1
        return 0
    new = render(text)
    if new != text:
        README.write_text(new, encoding="utf-8")
        print("README.md: tables rewritten")
    return 0


if __name__ == "__main__":
    if str(ROOT) not in sys.path:  # this checkout's npgan, installed or not
        sys.path.insert(0, str(ROOT))
    sys.exit(main())
