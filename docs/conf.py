"""Sphinx configuration of the aiida-lisei documentation (MyST Markdown)."""

import aiida_lisei

project = 'aiida-lisei'
author = 'aiida-lisei developers'
release = aiida_lisei.__version__
extensions = ['myst_parser', 'sphinx.ext.autodoc', 'sphinx.ext.napoleon', 'sphinx.ext.mathjax']
myst_enable_extensions = ['colon_fence', 'dollarmath', 'deflist']
myst_heading_anchors = 3
source_suffix = {'.md': 'markdown'}
exclude_patterns = ['_build']
html_theme = 'furo'
html_title = f'aiida-lisei {release}'
autodoc_mock_imports: list[str] = []
nitpicky = False
