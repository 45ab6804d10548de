"""The test tree's layout: shared helpers live in tests/support/, so no test module (nor a
benchmark) imports from a test module."""

from __future__ import annotations

from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from tests.support.imports import ROOT, runtime_imports


def is_test_module(name: str) -> bool:
    """Whether module ``name`` is a test module of the suite (``tests.….test_*``)."""
    return name.startswith("tests.") and name.rsplit(".", 1)[-1].startswith("test_")


def test_module_imports(paths) -> list[str]:
    """``path: module`` for each import of a test module made by one of ``paths``."""
    found = []
    for path in sorted(paths):
        for name in sorted(runtime_imports(path)):
            if is_test_module(name):
                found.append(f"{path.relative_to(ROOT)}: {name}")
    return found


class TestModuleImportTests(SynchronousTestCase):
    maxDiff = None

    def test_no_test_module_imports_another(self):
        paths = list((ROOT / "tests").rglob("*.py")) + list((ROOT / "bench").glob("*.py"))
        self.assertEqual(test_module_imports(paths), [])

    def test_an_import_of_a_test_module_is_found(self):
        offender = Path(self.mktemp())
        offender.write_text("from tests.registrant.test_store import account\n"
                            "import tests.sip.test_headers\n"
                            "from tests.support.accounts import make_row\n"
                            "def later():\n    from tests.routing import test_proxy\n")
        self.assertEqual(sorted(name for name in runtime_imports(offender) if is_test_module(name)),
                         ["tests.registrant.test_store", "tests.routing.test_proxy", "tests.sip.test_headers"])
