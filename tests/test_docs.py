"""The documentation holds together: every relative link of the README, the changelog and
the pages of docs/, config/, profiles/ and studies/ reaches a file (and a heading, where it
names one), and the changelog is a list of dated, versioned releases whose newest is the
version in pyproject.toml."""

from __future__ import annotations

import datetime
import re

import pytest
from helpers import REPO

PAGES = sorted(
    {
        REPO / "README.md",
        REPO / "CHANGELOG.md",
        REPO / "config/README.md",
        REPO / "profiles/README.md",
        *(REPO / "docs").glob("**/*.md"),
        *(REPO / "studies").glob("**/*.md"),
    }
)
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"```.*?```", re.S)
RELEASE = re.compile(r"^## \[(\d+)\.(\d+)\.(\d+)\] - (\d{4}-\d{2}-\d{2})$", re.M)
KINDS = ("Security", "Added", "Changed", "Deprecated", "Removed", "Fixed")


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to '-'."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(page) -> set[str]:
    text = FENCE.sub("", page.read_text(encoding="utf-8"))
    return {slug(m.group(1)) for m in re.finditer(r"^#+\s+(.*)$", text, re.M)}


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_reach_their_file_and_heading(page):
    text = FENCE.sub("", page.read_text(encoding="utf-8"))
    broken = []
    for target in LINK.findall(text):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
            continue
        path, _, fragment = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        if not linked.exists():
            broken.append(f"{target}: no such file")
        elif fragment and linked.suffix == ".md" and fragment not in anchors(linked):
            broken.append(f"{target}: no heading '#{fragment}' in {linked.name}")
    assert not broken, f"{page.relative_to(REPO)}: " + "; ".join(broken)


def test_changelog_is_dated_releases_newest_first_at_the_package_version():
    text = (REPO / "CHANGELOG.md").read_text(encoding="utf-8")
    releases = [(tuple(map(int, m.groups()[:3])), m.group(4)) for m in RELEASE.finditer(text)]
    assert releases, "CHANGELOG.md has no '## [X.Y.Z] - YYYY-MM-DD' release"
    versions = [version for version, _ in releases]
    dates = [datetime.date.fromisoformat(date) for _, date in releases]
    assert versions == sorted(versions, reverse=True) and len(set(versions)) == len(versions)
    assert dates == sorted(dates, reverse=True)
    pyproject = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    version = re.search(r'^version = "([^"]+)"$', pyproject, re.M).group(1)  # no tomllib in 3.10
    assert ".".join(map(str, versions[0])) == version
    # Every release says what kind of change each entry is.
    bodies = RELEASE.split(text)[5::5]
    for version, body in zip(versions, bodies, strict=True):
        kinds = re.findall(r"^### (\w+)$", body, re.M)
        assert kinds and set(kinds) <= set(KINDS), (version, kinds)
