"""Every relative link in README.md and docs/*.md points at a file of this repository (and an anchor it has).

A link to a file outside the repository (``../shared/...``) works on one machine and is broken in every clone,
so it is refused as well as a link to a missing file.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
FENCE = re.compile(r"^```.*?^```", re.S | re.M)


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = FENCE.sub("", page.read_text(encoding="utf-8"))
    return {_slug(m.group(1)) for m in re.finditer(r"^#{1,6}\s+(.+?)\s*#*\s*$", text, re.M)}


def broken_links(page: Path, root: Path = ROOT) -> list[str]:
    """The relative links of ``page`` that do not resolve to a file (or an anchor of it) inside ``root``."""
    text = FENCE.sub("", page.read_text(encoding="utf-8"))
    problems = []
    for target in LINK.findall(text):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto: — not a file of the repository
            continue
        path_part, _, anchor = target.partition("#")
        linked = (page.parent / path_part).resolve() if path_part else page
        if root not in linked.parents and linked != root:
            problems.append(f"{target}: outside the repository")
        elif not linked.exists():
            problems.append(f"{target}: no such file")
        elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
            problems.append(f"{target}: no heading #{anchor} in {linked.name}")
    return problems


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_every_relative_link_resolves_inside_the_repository(page):
    assert broken_links(page) == []


def test_the_check_finds_a_missing_file_an_outside_file_and_a_missing_anchor(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "there.md").write_text("# A heading\n", encoding="utf-8")
    page = tmp_path / "docs" / "page.md"
    page.write_text("[ok](there.md#a-heading) [gone](missing.md) [out](../../elsewhere.md) "
                    "[anchor](there.md#nope) [web](https://example.org/x) ![pic](img/none.png)\n"
                    "```\n[in a code block](ignored.md)\n```\n", encoding="utf-8")
    assert broken_links(page, root=tmp_path) == [
        "missing.md: no such file", "../../elsewhere.md: outside the repository",
        "there.md#nope: no heading #nope in there.md", "img/none.png: no such file"]
