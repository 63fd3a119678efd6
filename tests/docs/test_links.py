"""Every relative link and image of the README, docs/ and bench/README.md resolves: the file
exists and, for `page.md#anchor`, the anchor is a heading of that page."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.docs import pages


@pytest.mark.parametrize("page", pages.pages(), ids=lambda p: str(p.relative_to(pages.ROOT)))
def test_relative_links_and_anchors_resolve(page: Path):
    broken = []
    for line, target in pages.links(page):
        if target.startswith(("http://", "https://", "mailto:")):
            continue
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        where = f"{page.relative_to(pages.ROOT)}:{line}: {target}"
        if not resolved.exists():
            broken.append(f"{where} (no such file)")
        elif anchor and resolved.suffix == ".md" and anchor not in pages.anchors(resolved):
            broken.append(f"{where} (no heading with that anchor)")
    assert not broken, "\n".join(broken)


def test_every_docs_page_is_linked_from_the_readme_or_the_docs_index():
    linked = {
        (page.parent / target.partition("#")[0]).resolve()
        for page in (pages.ROOT / "README.md", pages.DOCS / "README.md")
        for _, target in pages.links(page)
        if not target.startswith(("http://", "https://"))
    }
    orphans = [p.relative_to(pages.ROOT) for p in pages.DOCS.glob("*.md") if p.name != "README.md" and p not in linked]
    assert not orphans, f"pages no index links to: {orphans}"


def test_the_link_reader_finds_links_images_and_anchors(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(
        "# A `code` title, with punctuation!\n\nSee [there](other.md#x) and ![img](img/a.png).\n"
        "`[not a link](nowhere.md)`\n\n```bash\necho [no](link.md)\n```\n\n## A `code` title, with punctuation!\n"
    )
    assert pages.links(page) == [(3, "other.md#x"), (3, "img/a.png")]
    assert pages.anchors(page) == ["a-code-title-with-punctuation", "a-code-title-with-punctuation-1"]
