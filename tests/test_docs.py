"""The manual in docs/ builds without a single warning, as the test command requires, and
its architecture page names every module.

Sphinx runs as ``python -m sphinx -W --keep-going -b html -q docs OUT`` in a subprocess
(its own process: Sphinx keeps global state, and this is the command a person runs). The
``:src:`` role of docs/_ext/txuac_names.py makes every module, file and name the manual
mentions a checked reference, so code renamed or removed under the manual fails here too.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

from twisted.trial.unittest import SkipTest, SynchronousTestCase

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
BUILD_TIMEOUT = 120  # seconds; the manual builds in a few


def sphinx_build(source: Path, out: str, config_dir: Path | None = None) -> subprocess.CompletedProcess:
    """Sphinx from the checkout's root (``out`` may be relative to the test's directory)."""
    argv = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-b", "html", "-q"]
    if config_dir is not None:
        argv += ["-c", str(config_dir)]
    return subprocess.run([*argv, str(source.resolve()), str(Path(out).resolve())], capture_output=True, text=True, timeout=BUILD_TIMEOUT,
                          cwd=ROOT)


class ManualTests(SynchronousTestCase):
    def setUp(self) -> None:
        if importlib.util.find_spec("sphinx") is None:
            raise SkipTest("Sphinx is not installed (it is in the test extras: pip install -e '.[test]')")

    def test_builds_without_warnings(self):
        out = self.mktemp()
        result = sphinx_build(DOCS, out)
        self.assertEqual((result.returncode, result.stderr), (0, ""),
                         f"the manual does not build cleanly:\n{result.stderr}{result.stdout}")
        for page in ("index.html", "architecture.html"):
            self.assertTrue((Path(out) / page).is_file(), page)

    def test_names_missing_from_the_source_fail_the_build(self):
        """docs/conf.py on a page naming code that exists and code that does not."""
        source = Path(self.mktemp())
        source.mkdir()
        (source / "index.rst").write_text(
            "Names\n=====\n\n"
            ":src:`~txuac.net.stack.SIPStack.send_request` sends, "
            ":src:`txuac.sip.transaction.ClientTransaction.handle_timer` is inherited, "
            ":src:`txuac/sip/parser.py` parses.\n\n"
            ":src:`txuac.net.stack.SIPStack.no_such_method`, :src:`txuac.no_such_module.thing`, "
            ":src:`txuac/no_such_file.py`, :src:`txuac.routing.proxied_request.prepare_forward` "
            "(imported there, defined in proxy_rules).\n",
            encoding="utf-8")
        out = self.mktemp()
        result = sphinx_build(source, out, config_dir=DOCS)
        self.assertNotEqual(result.returncode, 0, result.stderr)
        warnings = [line for line in result.stderr.splitlines() if "src role:" in line]
        self.assertEqual(len(warnings), 4, result.stderr)
        for problem in ("txuac.net.stack.SIPStack defines no no_such_method", "txuac defines no no_such_module",
                        "no file or directory txuac/no_such_file.py",
                        "txuac.routing.proxied_request defines no prepare_forward"):
            self.assertIn(problem, result.stderr)
        # The build goes on (--keep-going): the names that exist are shown as written.
        page = (Path(out) / "index.html").read_text(encoding="utf-8")
        self.assertIn(">SIPStack.send_request<", page)


class ArchitectureMapTests(SynchronousTestCase):
    """docs/architecture.rst is the map of the code: a module it does not name is missing
    from it. Named means a ``:src:`` path (``txuac/sip/parser.py``) or a ``:src:`` name
    inside the module (``txuac.sip.parser.parse_message``), which the build checks."""

    def test_every_module_is_named(self):
        page = (DOCS / "architecture.rst").read_text(encoding="utf-8")
        named = set(re.findall(r":src:`(?:[^`<]*<)?~?([^`>]+)>?`", page))
        paths = {name for name in named if "/" in name}
        dotted = {name for name in named if "/" not in name}
        missing = []
        for path in sorted([*(ROOT / "txuac").rglob("*.py"), *(ROOT / "twisted" / "plugins").glob("*.py")]):
            if path.name == "__init__.py":
                continue
            relative = path.relative_to(ROOT).as_posix()
            module = relative.removesuffix(".py").replace("/", ".")
            if relative not in paths and not any(name.startswith(module + ".") for name in dotted):
                missing.append(relative)
        self.assertEqual(missing, [], "docs/architecture.rst does not name these modules: put each in the "
                                      "diagram of its layer and name it with :src: where it takes part")
