"""Every relative link of README.md and docs/ reaches a file, and a heading when it names one.

README.md is a short entry page and the rest lives in docs/, while code moves between
directories now and then: a link to a README section that moved, or to a file that moved,
goes stale without anything failing, and GitHub renders it as a link all the same. So every
relative link (inline `[text](target)`, reference definitions `[label]: target`, and
`#fragment` links within a page) is resolved against the page that holds it: the target must
exist inside the repository, and a fragment into a Markdown file must be one of that file's
heading anchors as GitHub derives them. Links to other sites are left alone: checking them
needs the network. README.md must also stay an entry page, at most 300 lines.

Files only: no servers, no Ray, none of conftest's fixtures.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
README_MAX_LINES = 300
PAGES = [README, *sorted(DOCS.rglob("*.md"))]
EXTERNAL = ("http://", "https://", "mailto:")

FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
# A code span ends at the first matching run of backticks, never past a blank line.
CODE_SPAN = re.compile(r"(`+)(?!`)(?:(?!\n[ \t]*\n).)*?(?<!`)\1(?!`)", re.DOTALL)
HEADING = re.compile(r"^ {0,3}#{1,6}[ \t]+(.*?)(?:[ \t]+#+)?[ \t]*$", re.MULTILINE)
HTML_ANCHOR = re.compile(r"<a\s[^>]*?\b(?:name|id)=[\"']([^\"']+)[\"']", re.IGNORECASE)
# Link text may hold one level of brackets, as in "[RFC [1]](page.md)".
_TEXT = r"\[(?:[^\[\]]|\[[^\[\]]*\])*\]"
INLINE_LINK = re.compile(
    _TEXT + r"\(\s*(<[^>\n]*>|[^\s)]+)(?:\s+(?:\"[^\"]*\"|'[^']*'|\([^)]*\)))?\s*\)"
)
DEFINITION = re.compile(r"^ {0,3}\[([^\]\n]+)\]:[ \t]*(<[^>\n]*>|\S+)", re.MULTILINE)
FULL_REFERENCE = re.compile(r"(" + _TEXT + r")\[([^\[\]\n]*)\]")


@dataclass(frozen=True)
class Link:
    line: int
    target: str


def prose(text: str) -> str:
    """`text` with fenced code blocks and code spans blanked out, line numbers kept:
    brackets and hashes in code are examples, not links or headings."""
    lines = text.split("\n")
    fence = ""
    for number, line in enumerate(lines):
        opening = FENCE.match(line)
        if fence:
            if opening and opening.group(1)[0] == fence[0] and len(opening.group(1)) >= len(fence):
                fence = ""
            lines[number] = ""
        elif opening:
            fence = opening.group(1)
            lines[number] = ""
    return CODE_SPAN.sub(lambda span: re.sub(r"[^\n]", " ", span.group()), "\n".join(lines))


def line_of(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


def _label(label: str) -> str:
    return " ".join(label.lower().split())


def find_links(text: str) -> list[Link]:
    """Every link target of a Markdown text: inline links and reference definitions."""
    plain = prose(text)
    found = [Link(line_of(plain, m.start()), m.group(1)) for m in INLINE_LINK.finditer(plain)]
    found += [Link(line_of(plain, m.start()), m.group(2)) for m in DEFINITION.finditer(plain)]
    return sorted(found, key=lambda link: link.line)


def undefined_references(text: str) -> list[Link]:
    """`[text][label]` and `[text][]` whose label has no definition: GitHub shows them as
    plain text, so the link is as broken as one with a missing target."""
    plain = prose(text)
    defined = {_label(m.group(1)) for m in DEFINITION.finditer(plain)}
    missing = []
    for m in FULL_REFERENCE.finditer(plain):
        label = m.group(2) or m.group(1)[1:-1]
        if _label(label) not in defined:
            missing.append(Link(line_of(plain, m.start()), f"[{label}]"))
    return missing


def anchor(heading: str) -> str:
    """The anchor GitHub gives a heading: its visible text in lower case, spaces as hyphens,
    every other character that is neither a letter, a digit, `-` nor `_` dropped."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)
    text = re.sub(r"<[^>]+>", "", text).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(text: str) -> set[str]:
    """Every fragment a link may name in this Markdown text."""
    plain = prose(text)
    seen: dict[str, int] = {}
    found = set(HTML_ANCHOR.findall(plain))
    for m in HEADING.finditer(plain):
        # GitHub numbers repeated headings: "setup", "setup-1", "setup-2".
        base = anchor(m.group(1))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def broken_links(page: Path) -> list[str]:
    """What is wrong with the links of `page`, one line each, as `page:line: target: why`."""
    text = page.read_text(encoding="utf-8")
    name = page.relative_to(ROOT).as_posix()
    problems = [f"{name}:{ref.line}: {ref.target}: undefined" for ref in undefined_references(text)]
    for link in find_links(text):
        target = link.target.removeprefix("<").removesuffix(">")
        if target.lower().startswith(EXTERNAL):
            continue
        path_part, _, fragment = target.partition("#")
        path_part = unquote(path_part.partition("?")[0])
        if not path_part:
            resolved = page
        elif path_part.startswith("/"):
            # GitHub reads a leading slash as the repository's root, not the file system's.
            resolved = (ROOT / path_part.lstrip("/")).resolve()
        else:
            resolved = (page.parent / path_part).resolve()
        where = f"{name}:{link.line}: {link.target}"
        if not resolved.is_relative_to(ROOT):
            problems.append(f"{where}: leaves the repository")
        elif not resolved.exists():
            problems.append(f"{where}: no such file")
        elif (
            fragment
            and resolved.suffix.lower() == ".md"
            and resolved.is_file()
            and unquote(fragment) not in anchors(resolved.read_text(encoding="utf-8"))
        ):
            problems.append(f"{where}: no such heading")
    return problems


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.relative_to(ROOT).as_posix())
def test_every_relative_link_resolves(page: Path) -> None:
    problems = broken_links(page)
    assert not problems, "\n".join(problems)


def test_readme_is_an_entry_page() -> None:
    lines = len(README.read_text(encoding="utf-8").splitlines())
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; move detail into docs/"


def test_readme_links_every_docs_page() -> None:
    # A docs page nothing links to is found only by those who already know it is there.
    linked = {
        (README.parent / link.target.partition("#")[0]).resolve()
        for link in find_links(README.read_text(encoding="utf-8"))
        if not link.target.lower().startswith(EXTERNAL)
    }
    unlinked = [page.relative_to(ROOT).as_posix() for page in PAGES[1:] if page not in linked]
    assert not unlinked, f"README.md does not link to {unlinked}"


@pytest.mark.parametrize(
    ("heading", "expected"),
    [
        ("Quick start", "quick-start"),
        ("JetStream `sync_interval` and power loss", "jetstream-sync_interval-and-power-loss"),
        (
            "Where things are while `serve run config.yaml` runs",
            "where-things-are-while-serve-run-configyaml-runs",
        ),
        ("Kubernetes (KubeRay)", "kubernetes-kuberay"),
        ("Scale-out, and what bounds it", "scale-out-and-what-bounds-it"),
        ("See [the API](docs/api.md)", "see-the-api"),
    ],
)
def test_anchor_follows_githubs_rules(heading: str, expected: str) -> None:
    assert anchor(heading) == expected


def test_the_finder_sees_every_kind_of_link() -> None:
    # A finder that saw no links would pass every page; this text has one of each kind.
    text = "\n".join(
        [
            "# Setup",
            "## Setup",
            'An [inline](a.md#setup) link, a [titled](<b c.md> "Title") one, a',
            "[reference][ref], a [collapsed][] one and [off site](https://example.com).",
            "Not links: `[code](x.md)` and",
            "```",
            "[fenced](y.md)",
            "# not a heading",
            "```",
            "[ref]: d.md",
            "[collapsed]: #setup-1",
            "[dangling][nowhere]",
        ]
    )
    assert [(link.line, link.target) for link in find_links(text)] == [
        (3, "a.md#setup"),
        (3, "<b c.md>"),
        (4, "https://example.com"),
        (10, "d.md"),
        (11, "#setup-1"),
    ]
    assert undefined_references(text) == [Link(12, "[nowhere]")]
    assert anchors(text) == {"setup", "setup-1"}
