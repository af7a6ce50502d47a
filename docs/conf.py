"""Sphinx configuration for the hvac-push documentation.

Build with warnings as errors, as CI does (tests/test_docs.py):

    .venv/bin/sphinx-build -W --keep-going -b html docs docs/_build/html
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
# The package from this source tree (not an older installed copy), and our extension.
sys.path[:0] = [str(ROOT), str(HERE / "_ext")]

from hvac_push import __version__  # noqa: E402

project = "hvac-push"
author = "the hvac-push developers"
copyright = "the hvac-push developers"
release = version = __version__

extensions = [
    "myst_parser",
    "hvacpush_options",
]

source_suffix = {".md": "markdown"}
root_doc = "index"
# Only pages: example sources are pulled in with literalinclude, build output never.
exclude_patterns = ["_build", "examples", "_ext", "**/README.md", "README.md"]

# Quotes stay as typed: option values, patterns and JSON must be copyable.
smartquotes = False

myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3

html_theme = "alabaster"
html_title = f"hvac-push {release}"
html_static_path: list[str] = []
# Fully offline: no fonts, analytics or other assets from elsewhere.
html_theme_options = {"font_family": "system-ui, sans-serif", "head_font_family": "system-ui, sans-serif"}

