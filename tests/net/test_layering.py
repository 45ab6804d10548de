"""The stack imports the SIP core below it and nothing from the layers above it (the uac
features, the configuration, the admin port, the service wiring) when it runs."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from tests.support.imports import import_cycles, package_imports, within

ABOVE = ("txuac.registrant", "txuac.routing", "txuac.admin", "txuac.config", "txuac.service", "txuac.tap",
         "txuac.auth")


class LayeringTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.modules = package_imports("txuac.net")

    def test_no_import_from_above(self) -> None:
        upward = {(module, target) for module, targets in self.modules.items() for target in targets
                  if within(target, ABOVE)}
        self.assertEqual(upward, set())

    def test_no_import_circle(self) -> None:
        self.assertEqual(import_cycles(self.modules), [])

    def test_the_scan_sees_imports(self) -> None:
        self.assertIn("txuac.net.transports", self.modules["txuac.net.stack"])
        # Annotation-only imports do not count: tls.py names TLSSettings for its signatures.
        self.assertNotIn("txuac.config", self.modules["txuac.net.tls"])
