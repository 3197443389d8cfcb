"""The documentation: every link of README.md, CHANGELOG.md and docs/*.md resolves inside the repository
(to a file, and to a heading of it when the link names one), the README stays a short manual, and it
shows the test command that CI runs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", ROOT / "CHANGELOG.md", *sorted((ROOT / "docs").glob("*.md"))]
README_MAX_LINES = 250

_FENCE = re.compile(r"^(```|~~~).*?^\1[ \t]*$", re.M | re.S)
_CODE_SPAN = re.compile(r"(`+).+?\1", re.S)
_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_HEADING = re.compile(r"^#{1,6}[ \t]+(.+?)[ \t]*#*[ \t]*$", re.M)


def _prose(text: str) -> str:
    """The text without code blocks and code spans, where a bracket is not a link."""
    return _CODE_SPAN.sub("", _FENCE.sub("", text))


def links(text: str) -> list[str]:
    """The targets of the inline links and images of markdown ``text``."""
    return _LINK.findall(_prose(text))


def anchors(text: str) -> set[str]:
    """The anchors GitHub gives the headings of markdown ``text``: lower case, punctuation dropped,
    spaces as hyphens, a repeated one numbered (``-1``, ``-2``)."""
    seen: dict[str, int] = {}
    out = set()
    for heading in _HEADING.findall(_FENCE.sub("", text)):
        slug = re.sub(r"[^\w\- ]", "", heading.replace("`", "").strip().lower()).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def broken_links(path: Path, root: Path = ROOT) -> list[str]:
    """The links of the markdown file ``path`` that do not resolve to a file inside ``root`` (and to one
    of its headings when the link has an anchor), each with the reason."""
    broken = []
    for target in links(path.read_text(encoding="utf-8")):
        where, _, anchor = target.partition("#")
        if re.match(r"^[a-z][a-z0-9+.-]*:", where, re.I) or where.startswith("//"):
            broken.append(f"{target}: points outside the repository")
            continue
        file = (path.parent / where).resolve() if where else path
        if not file.is_relative_to(root):
            broken.append(f"{target}: points outside the repository")
        elif not file.exists():
            broken.append(f"{target}: no such file")
        elif anchor and (file.suffix != ".md" or anchor not in anchors(file.read_text(encoding="utf-8"))):
            broken.append(f"{target}: no heading #{anchor} in {file.relative_to(root)}")
    return broken


@pytest.mark.parametrize("path", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_link_resolves_inside_the_repository(path):
    assert path.exists()
    assert broken_links(path) == []


def test_the_checker_finds_each_kind_of_broken_link(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("# Title\n\n## A `code` heading: here\n\n## Same\n\n## Same\n")
    page = tmp_path / "README.md"
    page.write_text(
        "[ok](docs/a.md) [ok](docs/a.md#title) [ok](docs/a.md#a-code-heading-here) [ok](docs/a.md#same-1)\n"
        "[missing](docs/b.md) [anchor](docs/a.md#nowhere) [up](../shared/x.md) [web](https://example.org)\n"
        "[self](#no-such-heading) `[not a link](nowhere.md)`\n\n```\n[not a link](nowhere.md)\n```\n")
    assert broken_links(page, tmp_path) == [
        "docs/b.md: no such file",
        "docs/a.md#nowhere: no heading #nowhere in docs/a.md",
        "../shared/x.md: points outside the repository",
        "https://example.org: points outside the repository",
        "#no-such-heading: no heading #no-such-heading in README.md",
    ]


def test_readme_is_a_short_manual():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; move detail into docs/"


def test_readme_shows_the_command_ci_runs():
    # .ci/run runs the README's test command and nothing else: the two must stay the same command
    ci = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()
          if line.strip() and not line.lstrip().startswith("#")]
    command = ci[-1]
    assert command == "make test"
    blocks = re.findall(r"^```bash\n(.*?)^```", (ROOT / "README.md").read_text(encoding="utf-8"), re.M | re.S)
    assert f"{command}\n" in blocks
