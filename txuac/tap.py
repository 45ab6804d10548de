"""twistd plugin glue: ``twistd -n uac --config conf/uac.toml`` (or ``twist uac --config ...``).

A bad configuration ends the command with one line naming the file and the key, not a
traceback. At option time (the file itself) by SystemExit. At start-up (a socket that
cannot be bound, an unusable TLS file) by the ConfigError itself, so that twistd still
reports it to a daemon's parent and removes its pid file; the excepthook ``makeService``
installs prints it. A store that cannot be used shows once the reactor runs: the same
line, then the reactor stops and the process ends with exit status 1 (under a daemonising
twistd the parent has returned by then: the line is in the log).

The service is handed over so that twistd (or twist) writes the log as ``[log]`` says:
text or JSON lines, from ``[log] level`` up (txuac.admin.logs).
"""

from __future__ import annotations

import atexit
import os
import sys

from twisted.application import service
from twisted.python import usage

from txuac import __version__
from txuac.config import load_settings
from txuac.errors import ConfigError, TxuacError


class Options(usage.Options):
    optParameters = [["config", "c", None, "Path to the TOML configuration file."],
                     ["worker-index", None, 0, "Internal: which of [core] workers this process is "
                      "(worker 0 starts the others with it).", int],
                     ["worker-dir", None, None, "Internal: where workers answer worker 0's RPC calls."]]
    longdesc = ("Where to start: write the commented sample configuration with txuac-ctl sample-config > uac.toml "
                "(conf/uac.toml in the source; every key with its default, docs/configuration.rst explains them), "
                "point [uac] reg_db_url at your "
                "uacreg table, then run: twistd -n uac --config uac.toml. Once it runs: "
                "txuac-ctl watch (bring-up progress), txuac-ctl accounts --state failed, and the status "
                "page at http://127.0.0.1:5064/status ([rpc] listen).")

    def opt_version(self) -> None:
        """Print the txuac version and exit."""
        print(f"txuac {__version__}")
        sys.exit(0)

    def postOptions(self) -> None:
        if not self["config"]:
            raise usage.UsageError("--config is required")
        try:
            self["settings"] = load_settings(self["config"])
        except ConfigError as e:
            # The command line is right, the file is not: no usage text, just the error.
            raise SystemExit(f"txuac: {e}") from None
        if not 0 <= self["worker-index"] < self["settings"].core.workers:
            raise usage.UsageError(f"--worker-index must be below [core] workers ({self['settings'].core.workers})")


def _install_excepthook() -> None:
    """Our own errors end the process with their message; anything else is a bug: traceback."""
    previous = sys.excepthook

    def excepthook(kind, value, tb) -> None:
        if isinstance(value, TxuacError):
            print(f"txuac: {value}", file=sys.stderr)
        else:
            previous(kind, value, tb)

    sys.excepthook = excepthook


def _exit_status(status: int) -> None:
    """End the process with ``status`` once twistd or twist is done (pid file removed, logs
    written): they end with 0 after the reactor stops, whatever stopped it."""
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(status)


def _stop_on_startup_error(error: TxuacError) -> None:
    """A start-up error found after the reactor started: the line a config error gets, then
    stop with exit status 1."""
    from twisted.internet import reactor

    print(f"txuac: {error}", file=sys.stderr)
    atexit.register(_exit_status, 1)
    if reactor.running:
        reactor.stop()
    else:
        reactor.callWhenRunning(reactor.stop)


def makeService(options: Options) -> service.IService:
    from txuac.admin.logs import with_configured_logs
    from txuac.service import UACService, tune_garbage_collector

    tune_garbage_collector()
    _install_excepthook()
    settings = options["settings"]
    # options.parent: twistd's or twist's own options, which decide where logs go and the
    # user twistd runs as once it has bound its sockets.
    parent = getattr(options, "parent", None)
    uac = UACService(settings, on_startup_error=_stop_on_startup_error, worker_index=options["worker-index"],
                     worker_dir=options["worker-dir"], run_as=run_as(parent))
    return with_configured_logs(uac, settings.log, parent)


def run_as(parent) -> tuple[int, int | None] | None:
    """twistd's ``--uid`` and ``--gid`` (None without ``--uid``, and under ``twist``)."""
    uid = parent.get("uid") if isinstance(parent, dict) else None
    return (uid, parent.get("gid")) if isinstance(uid, int) else None
