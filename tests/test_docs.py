"""docs/ and docs/_ext/hvacpush_options.py (against hvac_push.ops.tap): the documentation builds with warnings
as errors, lists every page, and runs its code.

Python in the docs is either a file in docs/examples/ (pulled in with
literalinclude and exercised by tests/test_docs_examples.py) or an inline
doctest (a ``pycon`` block), which runs here.
"""

from __future__ import annotations

import doctest
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
#: Markdown files in docs/ that are not pages of the site (mirrors exclude_patterns in docs/conf.py).
NOT_PAGES = {"README.md"}

FENCE = re.compile(r"^(?P<fence>```+|~~~+)\s*(?P<info>[^\n`]*)\n(?P<body>.*?)^(?P=fence)\s*$", re.M | re.S)


def pages() -> list[Path]:
    return sorted(p for p in DOCS.glob("*.md") if p.name not in NOT_PAGES)


def code_blocks() -> list[tuple[Path, int, str, str]]:
    """Every fenced block in the pages: (file, line, language, body)."""
    found = []
    for page in pages():
        text = page.read_text(encoding="utf-8")
        for match in FENCE.finditer(text):
            line = text.count("\n", 0, match.start()) + 1
            found.append((page, line, match.group("info").strip(), match.group("body")))
    return found


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("html")
    # Bounded, but no speed claim: a loaded machine may take minutes.
    result = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html", str(DOCS), str(out)],
        capture_output=True, text=True, timeout=600, cwd=ROOT,
    )
    assert result.returncode == 0, f"sphinx-build -W failed:\n{result.stdout}\n{result.stderr}"
    return out


def test_the_docs_build_with_warnings_as_errors(built: Path) -> None:
    # The build itself ran with -W (the fixture fails on any warning); its front page carries the index's content.
    index = (built / "index.html").read_text(encoding="utf-8")
    assert "<title>hvac-push" in index
    assert "Live HVAC telemetry pushed over WebSocket" in index
    assert 'href="tutorial.html"' in index


def test_every_page_is_built_and_reachable_from_the_index(built: Path) -> None:
    index = (built / "index.html").read_text(encoding="utf-8")
    for page in pages():
        html = built / (page.stem + ".html")
        assert html.exists(), f"{page.name} was not built"
        if page.stem != "index":
            assert f'href="{page.stem}.html"' in index, f"{page.name} is not in the index's table of contents"


def test_the_configuration_page_lists_every_option_of_the_code(built: Path) -> None:
    sys.path.insert(0, str(DOCS / "_ext"))
    try:
        from hvacpush_options import describe, option_label
    finally:
        sys.path.remove(str(DOCS / "_ext"))
    from html import unescape

    from hvac_push.ops.tap import Options

    text = unescape(re.sub(r"<[^>]+>", "", (built / "configuration.html").read_text(encoding="utf-8")))
    described = describe(Options)
    assert {"listen", "interval", "log-format", "drain-timeout", "allow-origin"} <= {o.name for o in described}
    for option in described:
        assert option_label(option) in text, option.name
        assert option.doc in re.sub(r"\s+", " ", text), option.name


def test_inline_python_is_only_doctests_and_they_pass():
    parser = doctest.DocTestParser()
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    ran = 0
    for page, line, info, body in code_blocks():
        language = info.split()[0] if info else ""
        if language not in ("python", "py", "python3", "pycon"):
            continue
        name = f"{page.relative_to(ROOT)}:{line}"
        assert ">>>" in body, (
            f"{name}: inline Python that no test runs; move it to docs/examples/ and include it "
            "with literalinclude, or write it as a doctest (a pycon block)"
        )
        test = parser.get_doctest(body, {"__name__": "docs"}, name, str(page), line)
        result = runner.run(test)
        assert result.failed == 0, f"{name}: doctest failed (see output above)"
        ran += result.attempted
    assert ran > 0


def test_every_example_file_is_shown_in_the_docs_and_exercised_by_a_test():
    shown = "\n".join(p.read_text(encoding="utf-8") for p in pages())
    tests = (ROOT / "tests" / "test_docs_examples.py").read_text(encoding="utf-8")
    for path in sorted((DOCS / "examples").iterdir()):
        if path.name.startswith((".", "_")) or path.is_dir():
            continue
        assert f"examples/{path.name}" in shown, f"docs/examples/{path.name} is not included in any page"
        mentioned = path.name in tests or f'example("{path.stem}")' in tests
        assert mentioned, f"docs/examples/{path.name} is not exercised by tests/test_docs_examples.py"
