"""The layout of the code and its tests: shared helpers live in tests/support/, so no test
module (nor a benchmark) imports from a test module; the tests mirror the SIP core and the
stack module by module; only the wiring and the admin port read the configuration."""

from __future__ import annotations

from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from tests.support.imports import ROOT, package_imports, runtime_imports, within

# What may import txuac.config when it runs: the twistd plugin's module, the service wiring
# and the admin port. The layers below get their settings as values.
CONFIG_READERS = ("txuac.config", "txuac.tap", "txuac.service", "txuac.admin")
# Packages whose every module has its own test module, tests/<package>/test_<module>.py.
MIRRORED = ("txuac/sip", "txuac/net")


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


def config_importers(modules: dict[str, set[str]]) -> list[str]:
    """The modules of ``modules`` outside CONFIG_READERS that import txuac.config when they run."""
    return sorted(name for name, targets in modules.items()
                  if not within(name, CONFIG_READERS) and any(within(t, ("txuac.config",)) for t in targets))


def untested_modules(package: str, root: Path = ROOT) -> list[str]:
    """The modules of ``package`` (``txuac/sip``) without a ``tests/sip/test_<module>.py``."""
    tests = root / "tests" / package.split("/", 1)[1]
    return sorted(path.relative_to(root).as_posix() for path in (root / package).glob("*.py")
                  if path.name != "__init__.py" and not (tests / f"test_{path.name}").exists())


class ConfigImportTests(SynchronousTestCase):
    def test_only_the_wiring_and_the_admin_port_import_the_configuration(self):
        self.assertEqual(config_importers(package_imports("txuac")), [])

    def test_an_import_of_the_configuration_is_found(self):
        modules = package_imports("txuac")
        self.assertIn("txuac.config", modules["txuac.tap"])
        self.assertEqual(config_importers({"txuac.registrant.record": {"txuac.config"},
                                           "txuac.admin.migrate": {"txuac.config"},
                                           "txuac.service": {"txuac.config"},
                                           "txuac.sip.listen": {"txuac.errors"}}),
                         ["txuac.registrant.record"])


class MirrorTests(SynchronousTestCase):
    def test_every_module_of_the_core_and_the_stack_has_its_test_module(self):
        for package in MIRRORED:
            self.assertEqual(untested_modules(package), [], package)

    def test_a_module_without_tests_is_found(self):
        root = Path(self.mktemp())
        for name in ("txuac/sip/__init__.py", "txuac/sip/parser.py", "txuac/sip/via.py", "tests/sip/test_parser.py"):
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_text("")
        self.assertEqual(untested_modules("txuac/sip", root), ["txuac/sip/via.py"])
