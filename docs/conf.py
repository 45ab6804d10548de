"""Sphinx configuration of the txuac manual (``python -m sphinx -W -b html docs OUT``).

A page is an ``.rst`` file here listed in the toctree of index.rst; nothing else to
register. The build needs no network and no theme beyond Sphinx's own (alabaster).
"""

import re
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(DOCS / "_ext"))

project = "txuac"
author = "the txuac authors"
copyright = "the txuac authors"
# The version as txuac/__init__.py writes it, read without importing txuac.
release = version = re.search(r'__version__ = "([^"]+)"', (ROOT / "txuac" / "__init__.py").read_text()).group(1)

extensions = ["txuac_names"]  # the :src: role (docs/_ext/txuac_names.py)
txuac_source_root = str(ROOT)

root_doc = "index"
exclude_patterns = ["_build", "_ext"]
default_role = "literal"  # `text` reads as ``text``, never as a broken cross-reference
highlight_language = "none"
nitpicky = True

html_theme = "alabaster"
html_theme_options = {"description": "Kamailio's uac module as a Twisted service", "fixed_sidebar": False}
html_show_sourcelink = False
