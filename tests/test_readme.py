"""The README: its example runs as printed (the first code a user copies), its tables are the code's, its commands
are the ones CI runs, and it stays short."""

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


# ============================================================================ the generated tables
def _tables():
    """tools/readme_tables.py, imported from its file (tools/ is not a package)."""
    import importlib.util

    path = README.parent / "tools" / "readme_tables.py"
    spec = importlib.util.spec_from_file_location("readme_tables", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readme_tables_match_the_code():
    t = _tables()
    text = README.read_text(encoding="utf-8")
    stale = t.stale(text)
    assert not stale, f"README.md's tables differ from the code ({', '.join(stale)}): run `{t.REFRESH}`"


def test_the_tables_hold_every_option_and_preset():
    from npgan.run.cli import build_parser
    from npgan.run.presets import PRESETS
    t = _tables()
    train_table, commands_table, presets_table = t.train_options_table(), t.command_options_table(), t.presets_table()
    subparsers = build_parser()._subparsers._group_actions[0].choices
    for name, parser in subparsers.items():
        table = train_table if name == "train" else commands_table
        for action in parser._actions:
            for option in action.option_strings:
                if option not in ("-h", "--help"):
                    assert f"`{option} " in table or f"`{option}`" in table or f" / {option}" in table, \
                        (name, option)
        if name != "train":
            assert f"| `npgan {name}` |" in commands_table
    for name in PRESETS:
        assert f"| `{name}` |" in presets_table
    assert presets_table.count("\n") == len(PRESETS) + 1  # header, rule, one row per preset


def test_a_changed_parser_makes_the_readme_stale(monkeypatch):
    import npgan.run.cli as cli
    t = _tables()
    text = README.read_text(encoding="utf-8")
    assert t.stale(text) == []
    build = cli.build_parser

    def with_an_extra_option():
        p = build()
        p._subparsers._group_actions[0].choices["train"].add_argument("--brand-new", help="an option added later")
        return p

    monkeypatch.setattr(cli, "build_parser", with_an_extra_option)
    assert t.stale(text) == ["train-options-table"]
    assert "| `--brand-new BRAND_NEW` | an option added later |" in t.render(text)


def test_table_cells_keep_their_pipes_escaped():
    t = _tables()
    row = [ln for ln in t.train_options_table().splitlines() if ln.startswith("| `--device")]
    assert row and len(re.findall(r"(?<!\\)\|", row[0])) == 3 and "cpu \\| gpu" in row[0], row  # two cells


# ============================================================================ length, install and CI
def test_readme_stays_short():
    n = len(README.read_text(encoding="utf-8").splitlines())
    assert n <= 250, f"README.md has {n} lines; it is for users (at most 250): move results and history to docs/"


def test_readme_install_and_test_commands_are_what_ci_runs():
    ci = README.parent / ".ci" / "run"
    if not ci.exists():
        import pytest
        pytest.skip("no .ci/run in this copy of the project")
    ci_lines = [ln.strip() for ln in ci.read_text(encoding="utf-8").splitlines() if not ln.lstrip().startswith("#")]
    text = README.read_text(encoding="utf-8")
    line = next((ln for ln in text.splitlines() if ln.startswith("python -m pip install") and "[test" in ln), None)
    assert line, "the README lost its test install command"
    install, _, test = line.partition(" && ")

    def quiet_off(cmd):
        return " ".join(w for w in cmd.split() if w != "-q" or not cmd.startswith("python -m pip"))

    assert any(quiet_off(c) == install for c in ci_lines if c.startswith("python -m pip")), (install, ci_lines)
    assert test and any(c == test or c.startswith(test + " ") for c in ci_lines), (test, ci_lines)
