"""Sphinx configuration of the aiida-lisei documentation (MyST Markdown)."""

import sys
from pathlib import Path

import aiida_lisei

sys.path.insert(0, str(Path(__file__).parent / '_ext'))

project = 'aiida-lisei'
author = 'aiida-lisei developers'
release = aiida_lisei.__version__
extensions = [
    'lisei_reference',
    'myst_parser',
    'sphinx.ext.autodoc',
    'sphinx.ext.napoleon',
    'sphinx.ext.mathjax',
]
myst_enable_extensions = ['colon_fence', 'dollarmath', 'deflist']
myst_heading_anchors = 3
source_suffix = {'.md': 'markdown'}
exclude_patterns = ['_build', 'dpgen_keys.md']  # included by dpgen.md
html_theme = 'furo'
html_title = f'aiida-lisei {release}'
autodoc_mock_imports: list[str] = []
nitpicky = False
