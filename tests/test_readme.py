"""The README's example must run as printed (it is the first code a user copies)."""

import re
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def test_twenty_line_example_runs_and_learns(capsys):
    text = README.read_text(encoding="utf-8")
    m = re.search(r"## Twenty lines\n\n```python\n(.*?)```", text, re.S)
    assert m, "the README lost its 'Twenty lines' example"
    code = m.group(1)
    assert len(code.strip().splitlines()) <= 22
    ns: dict = {}
    exec(compile(code, "README.md", "exec"), ns)
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == 2 and printed[0].startswith("loss ") and printed[1] == "True", printed
    loss = float(printed[0].split()[1])
    assert loss < 0.5  # the quadrant rule is learnt from a chance level of ln 2 ≈ 0.693
    assert ns["npgan"].gradcheck(lambda w: ns["F"].tanh(ns["x"].astype("float64")[:5] @ w.T).sum(), [ns["w"]])


def test_readme_commands_name_real_presets_and_options():
    from npgan.run.cli import build_parser
    from npgan.run.presets import PRESETS
    text = README.read_text(encoding="utf-8")
    for preset in re.findall(r"--preset ([\w-]+)", text):
        assert preset in PRESETS, preset
    train = build_parser()._subparsers._group_actions[0].choices["train"]
    known = {s for a in train._actions for s in a.option_strings}
    for line in text.splitlines():
        if line.startswith("npgan train"):
            for opt in re.findall(r"(--[a-z-]+)", line):
                assert opt in known, (opt, line)
