"""The SIP core is the bottom layer: it imports nothing from Twisted or from the layers above
it, and its modules import each other without a circle (sources read, nothing imported)."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from tests.support.imports import import_cycles, package_imports, within

ALLOWED = ("txuac.sip", "txuac.errors")


class LayeringTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.modules = package_imports("txuac.sip")

    def test_no_import_from_above(self) -> None:
        upward = {(module, target) for module, targets in self.modules.items() for target in targets
                  if within(target, ("txuac",)) and not within(target, ALLOWED)}
        self.assertEqual(upward, set())

    def test_no_twisted(self) -> None:
        twisted = {(module, target) for module, targets in self.modules.items() for target in targets
                   if within(target, ("twisted", "zope"))}
        self.assertEqual(twisted, set())

    def test_no_import_circle(self) -> None:
        self.assertEqual(import_cycles(self.modules), [])

    def test_the_scan_sees_imports(self) -> None:
        """The checks above could pass on a scan that finds nothing: it finds the known arrows."""
        self.assertIn("txuac.sip.address", self.modules["txuac.sip.via"])
        self.assertIn("txuac.sip.via", self.modules["txuac.sip.transaction"])
        self.assertEqual(import_cycles({"a": {"b"}, "b": {"a"}}), [["a", "b", "a"]])
