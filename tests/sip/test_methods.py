"""txuac.sip.methods: the SIP method names txuac knows, one list for the stack, the proxy and
the metrics."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from txuac.sip.grammar import is_token
from txuac.sip.methods import KNOWN_METHODS, METHODS


class MethodTests(SynchronousTestCase):
    def test_rfc_3261_and_its_extensions(self):
        self.assertEqual(METHODS[:6], ("INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "REGISTER"))
        for method in ("SUBSCRIBE", "NOTIFY", "MESSAGE", "INFO", "REFER", "UPDATE", "PRACK", "PUBLISH"):
            self.assertIn(method, KNOWN_METHODS)

    def test_each_once_as_an_upper_case_token(self):
        self.assertEqual(len(set(METHODS)), len(METHODS))
        self.assertEqual(KNOWN_METHODS, frozenset(METHODS))
        for method in METHODS:
            self.assertTrue(is_token(method) and method.isupper(), method)
