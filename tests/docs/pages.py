"""Read the documentation pages: fenced code blocks with their doc-test markers, links,
heading anchors and tables.

A marker is an HTML comment on the line right before a fence (invisible on a rendered page):

    <!-- doc-test: skip: creates a venv; .ci/run runs this command itself -->
    <!-- doc-test: output -->

`skip: <reason>` makes the doc-test runner report the block as skipped with that reason
instead of running it; `output` marks a `text` block as what the runnable block before it
prints (each of its lines must appear in that block's output).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"

_FENCE = re.compile(r"^(?P<fence>```+|~~~+)\s*(?P<lang>[\w+-]*)\s*$")
_MARKER = re.compile(r"^<!--\s*doc-test:\s*(?P<body>.*?)\s*-->\s*$")
# A Python block that is a file the user saves: its first line is a comment naming it.
_FILE_COMMENT = re.compile(r"^#\s*(?P<name>[\w./-]+\.py)\s*$")
_LINK = re.compile(r"!?\[(?P<text>[^\]]*)\]\((?P<target>[^)\s]+)(?:\s+\"[^\"]*\")?\)")
_HTML_SRC = re.compile(r"<(?:img|a)\b[^>]*?\b(?:src|href)=\"(?P<target>[^\"]+)\"")
_HEADING = re.compile(r"^(?P<hashes>#{1,6})\s+(?P<title>.+?)\s*#*\s*$")

SHELL = ("bash", "sh", "shell")
RUNNABLE = ("python", *SHELL)


@dataclass(frozen=True)
class Block:
    """One fenced code block of a page."""

    page: Path
    line: int  # 1-based line of the opening fence
    lang: str
    code: str
    marker: Optional[str]  # the doc-test marker's body, if any

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"

    @property
    def runnable(self) -> bool:
        return self.lang in RUNNABLE

    @property
    def skip_reason(self) -> Optional[str]:
        if self.marker and self.marker.startswith("skip:"):
            return self.marker[len("skip:"):].strip()
        return None

    @property
    def is_expected_output(self) -> bool:
        return self.marker == "output"

    @property
    def saved_as(self) -> Optional[str]:
        """The file name a Python block asks the reader to save it as (`# pipeline.py`)."""
        if self.lang != "python":
            return None
        first = self.code.splitlines()[0] if self.code else ""
        match = _FILE_COMMENT.match(first)
        return match.group("name") if match else None


def blocks(page: Path) -> List[Block]:
    """Every fenced code block of `page`, in order."""
    found: List[Block] = []
    lines = page.read_text().splitlines()
    i = 0
    while i < len(lines):
        opening = _FENCE.match(lines[i])
        if opening is None:
            i += 1
            continue
        marker = _MARKER.match(lines[i - 1]) if i > 0 else None
        fence, body = opening.group("fence"), []
        j = i + 1
        while j < len(lines) and not lines[j].startswith(fence):
            body.append(lines[j])
            j += 1
        if j == len(lines):
            raise ValueError(f"{page}:{i + 1}: code block never closed")
        found.append(Block(page, i + 1, opening.group("lang"), "\n".join(body) + "\n",
                           marker.group("body") if marker else None))
        i = j + 1
    return found


def markers(page: Path) -> List[Tuple[int, str]]:
    """(line, body) of every doc-test marker on `page`, wherever it stands."""
    return [(n, m.group("body")) for n, line in enumerate(page.read_text().splitlines(), 1)
            if (m := _MARKER.match(line))]


def prose_lines(page: Path) -> Iterator[Tuple[int, str]]:
    """(line number, text) of the lines outside code blocks."""
    inside: Optional[str] = None
    for number, line in enumerate(page.read_text().splitlines(), 1):
        fence = _FENCE.match(line)
        if inside is None and fence:
            inside = fence.group("fence")
        elif inside is not None and line.startswith(inside):
            inside = None
        elif inside is None:
            yield number, line


def links(page: Path) -> List[Tuple[int, str]]:
    """(line, target) of every Markdown link, image and HTML src/href outside code blocks
    (inline code spans are left out)."""
    found = []
    for number, line in prose_lines(page):
        text = re.sub(r"`[^`]*`", "", line)
        found += [(number, m.group("target")) for m in _LINK.finditer(text)]
        found += [(number, m.group("target")) for m in _HTML_SRC.finditer(text)]
    return found


def slug(title: str) -> str:
    """The anchor GitHub and GitLab give a heading: lowercase, punctuation dropped, spaces
    as dashes (inline code and link markup reduced to their text)."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", title)
    text = text.replace("`", "").strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(page: Path) -> List[str]:
    """The anchors of `page`'s headings, numbered as GitHub does when a title repeats."""
    seen: Dict[str, int] = {}
    out = []
    for _, line in prose_lines(page):
        match = _HEADING.match(line)
        if match is None:
            continue
        base = slug(match.group("title"))
        count = seen.get(base, 0)
        seen[base] = count + 1
        out.append(base if count == 0 else f"{base}-{count}")
    return out


def tables(page: Path) -> List[List[List[str]]]:
    """Every pipe table of `page` as rows of stripped cells (header first, the --- row left out)."""
    found: List[List[List[str]]] = []
    current: List[List[str]] = []
    for _, line in list(prose_lines(page)) + [(0, "")]:
        if line.startswith("|"):
            cells = [cell.strip() for cell in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
            if not all(re.fullmatch(r":?-+:?", cell) for cell in cells):
                current.append(cells)
        elif current:
            found.append(current)
            current = []
    return found


def pages() -> List[Path]:
    """README.md, every page under docs/ and bench/README.md."""
    return [ROOT / "README.md", *sorted(DOCS.rglob("*.md")), ROOT / "bench" / "README.md"]
