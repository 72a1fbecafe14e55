"""Every relative link and #anchor in the README and the docs resolves: the file exists in the repository, and the
anchor is a heading of the file it points into, named by GitHub's rules."""

import re
import unicodedata
from pathlib import Path
from urllib.parse import unquote

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", ROOT / "CHANGELOG.md", ROOT / "benchmarks" / "README.md",
         *sorted((ROOT / "docs").glob("*.md"))]

FENCE = re.compile(r"^ {0,3}(```|~~~)")
HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
CODE_SPAN = re.compile(r"(`+)(.+?)\1", re.S)
LINK = re.compile(r"!?\[((?:[^\[\]]|\[[^\[\]]*\])*)\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE = re.compile(r"^ {0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+\"[^\"]*\")?\s*$", re.M)
HTML_ANCHOR = re.compile(r"<a\s[^>]*(?:name|id)=\"([^\"]+)\"", re.I)


def prose_lines(text: str) -> list[str]:
    """The lines outside fenced code blocks (the lines inside come back empty, so line numbers stay)."""
    out, fence = [], None
    for line in text.splitlines():
        m = FENCE.match(line)
        if fence is None and m:
            fence = m.group(1)
            out.append("")
        elif fence is not None:
            if line.strip().startswith(fence):
                fence = None
            out.append("")
        else:
            out.append(line)
    return out


def heading_text(raw: str) -> str:
    """What GitHub shows of a heading: code spans as their text, links and images as their text, no HTML tags."""
    text = CODE_SPAN.sub(lambda m: m.group(2), raw)
    text = LINK.sub(lambda m: m.group(1), text)
    return re.sub(r"<[^>]+>", "", text)


def slug(text: str) -> str:
    """GitHub's anchor for a heading: lower case; letters, marks, digits, '_', '-' and spaces kept; each space a '-'."""
    kept = [c for c in heading_text(text).strip().lower()
            if c in " -" or unicodedata.category(c)[0] in "LMN" or unicodedata.category(c) == "Pc"]
    return "".join(kept).replace(" ", "-")


def anchors(text: str) -> set[str]:
    """Every #anchor a page offers: its headings' slugs (a repeated one gets -1, -2, ...) and HTML name/id anchors."""
    seen: dict[str, int] = {}
    out = set(HTML_ANCHOR.findall(text))
    for line in prose_lines(text):
        m = HEADING.match(line)
        if m:
            s = slug(m.group(2))
            out.add(s if s not in seen else f"{s}-{seen[s]}")
            seen[s] = seen.get(s, 0) + 1
    return out


def links(text: str) -> list[tuple[int, str]]:
    """(line number, target) of every link and image outside code."""
    found = []
    for n, line in enumerate(prose_lines(text), 1):
        line = CODE_SPAN.sub("code", line)
        found += [(n, m.group(2)) for m in LINK.finditer(line)]
        found += [(n, m.group(1)) for m in REFERENCE.finditer(line)]
    return found


def broken_links(page: Path, root: Path = ROOT) -> list[str]:
    """One line per link of ``page`` that does not resolve, naming the page, line, target and what is wrong."""
    problems = []
    cache: dict[Path, set[str]] = {}
    for n, target in links(page.read_text(encoding="utf-8")):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):  # http:, https:, mailto: ... are not checked here
            continue
        path_part, _, anchor = target.partition("#")
        dest = (page.parent / unquote(path_part)).resolve() if path_part else page
        where = f"{page.relative_to(root)}:{n}: {target}"
        if not dest.is_relative_to(root.resolve()):
            problems.append(f"{where}: points outside the repository")
        elif not dest.exists():
            problems.append(f"{where}: no such file")
        elif anchor:
            if dest.suffix != ".md":
                problems.append(f"{where}: an anchor into a file that is not markdown")
                continue
            if dest not in cache:
                cache[dest] = anchors(dest.read_text(encoding="utf-8"))
            if unquote(anchor) not in cache[dest]:
                problems.append(f"{where}: {dest.name} has no heading with the anchor #{anchor}")
    return problems


def test_every_relative_link_and_anchor_resolves():
    assert len(PAGES) >= 6
    problems = [p for page in PAGES if page.exists() for p in broken_links(page)]
    assert not problems, "broken links:\n" + "\n".join(problems)


def test_slugs_follow_githubs_rules():
    # headings and the anchors GitHub gives them (math.md's table of contents links these)
    assert slug("1. Reverse mode in one page") == "1-reverse-mode-in-one-page"
    assert slug("2. Elementwise arithmetic ([`npgan/ops.py`](../npgan/ops.py))") == \
        "2-elementwise-arithmetic-npganopspy"
    assert slug("15. The Dirac-GAN ([`demos/dirac_gan.py`](../demos/dirac_gan.py))") == \
        "15-the-dirac-gan-demosdirac_ganpy"
    assert slug("`Add`, `Sub`, `Neg` — sums and differences") == "add-sub-neg--sums-and-differences"
    assert slug("AMD EPYC (AVX2), before and after") == "amd-epyc-avx2-before-and-after"
    assert slug("The demos' figures") == "the-demos-figures"
    assert slug("Ünïcode stays: Größe") == "ünïcode-stays-größe"


def test_the_checker_finds_what_is_broken(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "b.md").write_text("# Title\n\n## Part one\n\n## Part one\n", encoding="utf-8")
    (tmp_path / "code.py").write_text("x = 1\n", encoding="utf-8")
    page = tmp_path / "README.md"
    page.write_text(
        "# Top\n\n"
        "[ok](docs/b.md#part-one) [ok too](docs/b.md#part-one-1) [self](#top) [file](code.py)\n"
        "[gone](docs/missing.md) [bad anchor](docs/b.md#part-two) [out](../elsewhere.md)\n"
        "![picture](docs/nope.png) [web](https://example.org/x) `[in code](nowhere.md)`\n\n"
        "```markdown\n[in a fence](nowhere.md)\n# not a heading\n```\n\n"
        "[not a heading](#not-a-heading) [anchor in code](code.py#x)\n"
        "[ref]: docs/also-missing.md\n", encoding="utf-8")
    problems = broken_links(page, tmp_path)
    assert [p.split(": ", 1)[0] for p in problems] == ["README.md:4", "README.md:4", "README.md:4", "README.md:5",
                                                       "README.md:12", "README.md:12", "README.md:13"], problems
    assert [p.rsplit(": ", 1)[1] for p in problems] == [
        "no such file", "b.md has no heading with the anchor #part-two", "points outside the repository",
        "no such file", "README.md has no heading with the anchor #not-a-heading",
        "an anchor into a file that is not markdown", "no such file"]
