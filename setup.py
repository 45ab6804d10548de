"""Build script: setup.cfg holds the metadata; this compiles the sans-IO SIP core.

The modules below are compiled to C extensions with mypyc (they are plain,
fully typed Python: the same files run interpreted). Set TXUAC_COMPILE=0 to
install them as pure Python, as ``./dev`` does for its editable install so
that edits take effect without a rebuild.
"""

import os

from setuptools import setup

COMPILED_MODULES = [
    "txuac/sip/address.py",
    "txuac/sip/listen.py",
    "txuac/sip/methods.py",
    "txuac/sip/grammar.py",
    "txuac/sip/uri.py",
    "txuac/sip/fields.py",
    "txuac/sip/headers.py",
    "txuac/sip/message.py",
    "txuac/sip/parser.py",
    "txuac/sip/framing.py",
    "txuac/sip/transaction.py",
    "txuac/sip/via.py",
    "txuac/sip/server_rules.py",
    "txuac/sip/tokens.py",
    "txuac/sip/digest.py",
]


def ext_modules():
    if os.environ.get("TXUAC_COMPILE", "1") == "0":
        return []
    from mypyc.build import mypycify

    return mypycify(COMPILED_MODULES, opt_level="3")


setup(ext_modules=ext_modules())
