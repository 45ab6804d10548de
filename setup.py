"""Build script: setup.cfg holds the metadata; this compiles the sans-IO SIP core, the
proxy's sans-IO rules, the registrant (its account rules, row checks and service), the
stack that drives the transactions (txuac/net/stack.py, timers.py) and the digest client
(txuac/auth.py).

The modules below are compiled to C extensions with mypyc (they are plain,
fully typed Python: the same files run interpreted). With GCC the build is profile-guided
(ProfileGuidedBuildExt below; TXUAC_PGO=0 builds once). A module a routing script calls
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
import shutil
import subprocess
import sys
import sysconfig

from setuptools import setup
from setuptools.command.build_ext import build_ext

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


HERE = os.path.dirname(os.path.abspath(__file__))

# What the instrumented build runs to learn which paths are hot: the two in-process
# benchmarks (a REGISTER cycle per account, a proxied call), small. Paths they never
# take are still optimised as usual (-fprofile-partial-training).
TRAINING = (
    ("bench/registration_cpu.py", "2000", "--rounds", "1"),
    ("bench/proxy_cpu.py", "--calls", "1000", "--rounds", "1"),
)
# The core's functions call each other across its modules; as exported symbols of a shared
# object each such call went through the PLT and none could be inlined. Nothing replaces
# them at run time, so GCC may bind them at build time.
GCC_FLAGS = ("-fno-semantic-interposition",)
PROFILE_GENERATE = ("-fprofile-update=single",)
# A function the profile does not match is built as without it: a warning, not mypyc's -Werror.
PROFILE_USE = ("-fprofile-correction", "-fprofile-partial-training", "-Wno-missing-profile",
               "-Wno-coverage-mismatch")
TRAINING_TIMEOUT = 600  # seconds for each run; a few are enough


class ProfileGuidedBuildExt(build_ext):
    """With GCC, the compiled core built for speed: its calls bound within it
    (GCC_FLAGS), and profile-guided: built instrumented, TRAINING run on that build, then
    built again with the profile (hot paths laid out together, cold error branches moved
    out of them). docs/benchmarks.rst has the figures. With TXUAC_PGO=0, or without the
    training files (an sdist without bench/ and tests/), one build; with another compiler,
    one plain build."""

    def run(self) -> None:
        if not self.extensions or not self._is_gcc():
            super().run()
            return
        # Each build below is a whole build_ext run with the flags added to the mypyc ones.
        self._compiler_choice = self.compiler  # run() replaces it by the compiler it made
        self._mypyc_args = [(extension, list(extension.extra_compile_args or []),
                             list(extension.extra_link_args or [])) for extension in self.extensions]
        if os.environ.get("TXUAC_PGO", "1") == "0" or not all(
                os.path.exists(os.path.join(HERE, script)) for script, *_ in TRAINING):
            self._build_with(GCC_FLAGS)
            return
        profile_dir = os.path.abspath(os.path.join(self.build_temp, "pgo"))
        shutil.rmtree(profile_dir, ignore_errors=True)  # gcov adds to the counts it finds
        os.makedirs(profile_dir)
        self._build_with((*GCC_FLAGS, f"-fprofile-generate={profile_dir}", *PROFILE_GENERATE))
        failure = self._train()
        if failure is None:
            self._build_with((*GCC_FLAGS, f"-fprofile-use={profile_dir}", *PROFILE_USE))
        else:
            print(f"txuac: profile-guided build skipped ({failure}); building without it", file=sys.stderr)
            self._build_with(GCC_FLAGS)

    @staticmethod
    def _is_gcc() -> bool:
        compiler = os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc"
        try:
            version = subprocess.run([*compiler.split(), "--version"], capture_output=True, text=True,
                                     timeout=30).stdout
        except (OSError, subprocess.SubprocessError):
            return False
        return "Free Software Foundation" in version  # GCC's flags and .gcda files

    def _build_with(self, flags: tuple[str, ...]) -> None:
        for extension, compile_args, link_args in self._mypyc_args:
            extension.extra_compile_args = [*compile_args, *flags]
            extension.extra_link_args = [*link_args, *flags]
        self.compiler = self._compiler_choice
        self.force = True  # every object again: make skips objects newer than their source
        super().run()

    def _train(self) -> str | None:
        """None when every training run passed on the instrumented build, else why not."""
        built = HERE if self.inplace else os.path.abspath(self.build_lib)
        path = [built, *filter(None, [os.environ.get("PYTHONPATH")])]
        environment = dict(os.environ, PYTHONPATH=os.pathsep.join(path), PYTHONDONTWRITEBYTECODE="1")
        for script, *arguments in TRAINING:
            try:
                run = subprocess.run([sys.executable, os.path.join(HERE, script), *arguments], cwd=HERE,
                                     env=environment, capture_output=True, text=True, errors="replace",
                                     timeout=TRAINING_TIMEOUT)
            except (OSError, subprocess.TimeoutExpired) as e:
                return f"{script}: {e}"
            if run.returncode != 0:
                last = (run.stderr.strip().splitlines() or ["no output"])[-1]
                return f"{script} exited {run.returncode}: {last}"
        return None


setup(ext_modules=ext_modules(), cmdclass={"build_ext": ProfileGuidedBuildExt})
