"""Build script: setup.cfg holds the metadata; this compiles the sans-IO SIP core, the
proxy's sans-IO rules, the registrant (its account rules, row checks and service), the
stack that drives the transactions (txuac/net/stack.py, timers.py) and the digest client
(txuac/auth.py).

The modules below are compiled to C extensions with mypyc (they are plain,
fully typed Python: the same files run interpreted). A module a routing script calls
directly with values of its own (txuac/routing/dialogs.py: ``$dlg_var``) stays
interpreted: compiled, a value of the wrong type would raise TypeError at the call
instead of the module's own error. Set TXUAC_COMPILE=0 to
install them as pure Python, as ``./dev`` does for its editable install so
that edits take effect without a rebuild.

Their value classes made for every message (Address, the transaction and registrant
effects, the proxy's branches and rewrites) are dataclasses with ``__init__`` written out,
the frozen ones with ``Final`` fields, not generated ``__init__``s or NamedTuples: mypyc
builds those through interpreted code, about 0.8 us an object against 0.05
(docs/benchmarks.rst).
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
    "txuac/sip/memo.py",
    "txuac/sip/digest.py",
    "txuac/sip/affinity.py",
    "txuac/registrant/protocol.py",
    "txuac/registrant/row_rules.py",
    "txuac/registrant/record.py",
    "txuac/registrant/account.py",
    "txuac/registrant/retry.py",
    "txuac/registrant/budget.py",
    "txuac/net/timers.py",
    "txuac/net/datagrams.py",
    "txuac/net/stack.py",
    "txuac/auth.py",
    "txuac/registrant/service.py",
    "txuac/routing/replace.py",
    "txuac/routing/restore_codec.py",
    "txuac/routing/restore.py",
    "txuac/routing/proxy_rules.py",
    "txuac/routing/response_context.py",
]


def ext_modules():
    if os.environ.get("TXUAC_COMPILE", "1") == "0":
        return []
    from mypyc.build import mypycify

    # zope.interface ships no type information; the compiled modules only name its classes.
    # Imports that are not compiled are followed silently: their typing (Twisted's zope
    # interfaces, which declare methods without self) is not what the build checks.
    return mypycify(["--ignore-missing-imports", "--follow-imports=silent", *COMPILED_MODULES], opt_level="3")


setup(ext_modules=ext_modules())
