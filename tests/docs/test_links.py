"""Every link in the README and the guides under docs/ leads to a file of the repository, and an anchor to a heading."""

import re
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
PAGES = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)


def prose(page: Path) -> str:
    """The page without its code blocks and inline code, where brackets are not links."""
    return re.sub(r"`[^`\n]*`", "", FENCE.sub("", page.read_text(encoding="utf-8")))


def anchors(page: Path) -> set[str]:
    """The anchors GitHub gives a page's headings: lower case, punctuation dropped, spaces as hyphens, repeats numbered."""
    seen: dict[str, int] = {}
    for heading in re.findall(r"^#{1,6} +(.+?) *#*$", FENCE.sub("", page.read_text(encoding="utf-8")), re.MULTILINE):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        if count:
            seen[f"{slug}-{count}"] = 1
    return set(seen)


def local_links(page: Path) -> list[str]:
    return [target for target in LINK.findall(prose(page)) if not re.match(r"[a-z]+:", target)]


@pytest.mark.parametrize("page", PAGES, ids=[str(page.relative_to(REPO_ROOT)) for page in PAGES])
def test_every_link_resolves(page):
    broken = []
    for target in local_links(page):
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        if not resolved.is_relative_to(REPO_ROOT) or not resolved.exists():
            broken.append(f"{target} (no such file in the repository)")
        elif anchor and (resolved.suffix != ".md" or anchor not in anchors(resolved)):
            broken.append(f"{target} (no heading with that anchor)")
    assert not broken, f"{page.relative_to(REPO_ROOT)}: " + "; ".join(broken)


def test_the_checker_sees_links_and_headings(tmp_path):
    """A broken anchor, a missing file and a link inside a code block are told apart."""
    page = tmp_path / "page.md"
    page.write_text(
        "# Top\n\n## Does it help? (measured)\n\n## Top\n\n## The `--init` flag\n\n[a](#does-it-help-measured) ![b](pic.png) [c](other.md#x)\n"
        "```bash\n# not a heading\necho [d](nowhere.md)\n```\n`[e](inline.md)` [f](https://example.org)\n",
        encoding="utf-8",
    )
    assert anchors(page) == {"top", "top-1", "does-it-help-measured", "the---init-flag"}
    assert local_links(page) == ["#does-it-help-measured", "pic.png", "other.md#x"]
