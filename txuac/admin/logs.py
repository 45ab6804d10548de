"""How twistd and twist write the log: ``[log] format`` ("text" or "json") and ``level``.

JSON lines are for log shippers. Each event becomes one JSON object on one line: ``time``
(ISO 8601, UTC), ``level``, ``namespace``, ``text`` (the formatted message), then the
event's own fields (``l_uuid``, ``state``, ``reason``, ``status``...), and ``traceback``
for failures. Twisted's own messages logged through the legacy ``twisted.python.log``
(``Starting factory ...``, a legacy ``log.err``) come out the same way: namespace
``twisted``, their context in ``system`` (e.g. ``UDPListener (UDP)``), the message in
``text`` and a failure's traceback in ``traceback``, not in the text. Twisted's bookkeeping keys (``log_*``, the legacy ``message``/``system``/...
keys) are left out, and so is any field whose name looks like a secret.

Events below ``[log] level`` (info by default) are dropped in both formats: the
registrant logs its routine steps (two per REGISTER) at debug.

Under ``twistd``, ``txuac.tap.makeService`` wraps the service in ``LogObserverRoot``,
which hands the observer (``text_observer`` or ``json_observer``) to twistd as the
application's ILogObserver component (twistd reads it when it starts logging, after
makeService), writing where twistd would have written its text: stdout with ``-n``, else
``--logfile`` (default ``twistd.log``), rotated on SIGUSR1. ``--logger`` and ``--syslog``
keep their meaning (and see every level). Under ``twist`` the JSON observer replaces
twist's file observer factory, and the level is twist's ``--log-level`` unless that is
given on the command line. An embedding application passes ``text_observer(a_file,
level)`` or ``json_observer(a_file, level)`` to ``globalLogBeginner.beginLoggingTo``.
"""

from __future__ import annotations

import json
import signal
import sys
from datetime import datetime, timezone
from typing import IO, Any, Sequence

from twisted.application import service
from twisted.logger import (
    FileLogObserver,
    FilteringLogObserver,
    ILogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    formatEvent,
    textFileLogObserver,
)
from twisted.python import logfile
from twisted.python.components import Componentized

from txuac.config import LogSettings

# Keys of twisted.python.log's legacy events, carried along when they are adapted.
_LEGACY_KEYS = frozenset(("message", "isError", "system", "time", "format", "failure", "why", "printed"))
_SECRET_WORDS = ("password", "passwd", "ha1", "authorization", "token", "secret", "credential")
_OWN_KEYS = frozenset(("time", "level", "namespace", "text", "traceback"))


def is_secret_name(key: str) -> bool:
    """Whether a field or parameter named ``key`` holds a secret (password, HA1, token...)."""
    lowered = key.lower()
    return any(word in lowered for word in _SECRET_WORDS)


def _jsonable(value: Any) -> Any:
    return str(value)  # enums of str are str already; anything else as its text


LEGACY_NAMESPACE = "log_legacy"  # twisted.logger's namespace for twisted.python.log events


def _text_and_failure(event: dict) -> tuple[str, Any]:
    """The message and the failure of an event; a legacy error's traceback is kept out of its text."""
    failure = event.get("log_failure")
    if event.get("log_namespace") == LEGACY_NAMESPACE and event.get("isError") and event.get("failure") is not None:
        why = event.get("why")
        return (str(why) if why else "Unhandled error"), event["failure"]
    return formatEvent(event), failure


def event_as_json(event: dict) -> str:
    """One log event as one line of JSON (with its newline)."""
    level = event.get("log_level")
    namespace = event.get("log_namespace") or "-"
    text, failure = _text_and_failure(event)
    line: dict[str, Any] = {
        "time": datetime.fromtimestamp(event.get("log_time") or 0, timezone.utc).isoformat(timespec="milliseconds"),
        "level": level.name if level is not None else "info",
        "namespace": "twisted" if namespace == LEGACY_NAMESPACE else namespace,
        "text": text,
    }
    for key, value in event.items():
        if key.startswith("log_") or key in _LEGACY_KEYS or key in _OWN_KEYS or is_secret_name(key):
            continue
        line[key] = value
    system = event.get("system")  # a legacy event's context, e.g. "UDPListener (UDP)"
    if system and system != "-":
        line["system"] = system
    if failure is not None:
        line["traceback"] = failure.getTraceback()
    try:
        text = json.dumps(line, default=_jsonable, ensure_ascii=False)
    except (TypeError, ValueError):  # a field JSON cannot hold (tuple keys, a cycle): its repr
        text = json.dumps({key: value if isinstance(value, (str, int, float, bool, type(None))) else repr(value)
                           for key, value in line.items()}, ensure_ascii=False)
    return text + "\n"


def json_file_observer(out_file: IO[str]) -> FileLogObserver:
    """Every event to ``out_file`` as JSON lines, unfiltered (twist's observer factory signature)."""
    return FileLogObserver(out_file, event_as_json)


def at_level(observer: ILogObserver, level: LogLevel) -> ILogObserver:
    """``observer`` given only the events at ``level`` and above."""
    return FilteringLogObserver(observer, [LogLevelFilterPredicate(defaultLogLevel=level)])


def json_observer(out_file: IO[str] | None = None, level: LogLevel = LogLevel.info) -> ILogObserver:
    """Events at ``level`` and above to ``out_file`` (stdout by default) as JSON lines.

    Also usable as ``twistd --logger txuac.admin.logs.json_observer`` (stdout only).
    Routine registration transitions are logged at debug: at the default level they
    cost nothing here.
    """
    return at_level(json_file_observer(out_file if out_file is not None else sys.stdout), level)


def text_observer(out_file: IO[str] | None = None, level: LogLevel = LogLevel.info) -> ILogObserver:
    """Events at ``level`` and above to ``out_file`` (stdout by default) as twistd's text lines."""
    return at_level(textFileLogObserver(out_file if out_file is not None else sys.stdout), level)


def twistd_log_file(server_options) -> IO[str] | None:
    """The file twistd would write its log to for these options (UnixAppLogger's choice),
    or None when twistd must keep its own choice (``--logger``, ``--syslog``, or stdout
    asked of a daemon, which twistd refuses itself)."""
    if server_options.get("logger") or server_options.get("syslog"):
        return None
    name = server_options.get("logfile") or ""
    nodaemon = server_options.get("nodaemon") or server_options.get("debug")
    if name == "-":
        return sys.stdout if nodaemon else None
    if nodaemon and not name:
        return sys.stdout
    log_file = logfile.LogFile.fromFullPath(name or "twistd.log")
    if not signal.getsignal(signal.SIGUSR1):  # as twistd does: SIGUSR1 rotates the log

        def rotate(signum, frame):
            from twisted.internet import reactor

            reactor.callFromThread(log_file.rotate)

        signal.signal(signal.SIGUSR1, rotate)
    return log_file


class LogObserverRoot(service.MultiService):
    """The service given to twistd: runs ``child`` and makes ``observer`` the log observer
    of the application it is added to (twistd's ILogObserver component)."""

    def __init__(self, child: service.IService, observer: ILogObserver):
        super().__init__()
        self.child = child
        self.observer = observer
        child.setServiceParent(self)

    def setServiceParent(self, parent) -> None:
        if isinstance(parent, Componentized) and parent.getComponent(ILogObserver) is None:
            parent.setComponent(ILogObserver, self.observer)
        super().setServiceParent(parent)


def log_level_in_argv(argv: Sequence[str]) -> bool:
    """Whether ``argv`` (twist's command line) sets ``--log-level``, in full or abbreviated
    as getopt accepts (``--log-l`` is the shortest prefix no other twist option has)."""
    for arg in argv[1:]:
        name = arg.partition("=")[0]
        if len(name) >= len("--log-l") and "--log-level".startswith(name):
            return True
    return False


def configure_twist(twist_options, settings: LogSettings, argv: Sequence[str]) -> None:
    """Make twist (which builds its observer after makeService) log as ``settings`` say;
    a ``--log-level`` in ``argv`` wins over ``[log] level``."""
    if settings.format == "json":
        twist_options["fileLogObserverFactory"] = json_file_observer
        twist_options["logFormat"] = "json"
    if not log_level_in_argv(argv):
        twist_options["logLevel"] = LogLevel.levelWithName(settings.level)


def twistd_observer(server_options, settings: LogSettings) -> ILogObserver | None:
    """The observer twistd should use for ``settings``, or None to leave twistd's own
    (``--logger``, ``--syslog``)."""
    out_file = twistd_log_file(server_options)
    if out_file is None:
        return None
    observer = json_observer if settings.format == "json" else text_observer
    return observer(out_file, LogLevel.levelWithName(settings.level))


def with_configured_logs(uac: service.IService, settings: LogSettings, runner_options) -> service.IService:
    """The service to hand to the runner whose options are ``runner_options`` (twistd's
    ServerOptions or twist's TwistOptions) so that it logs as ``settings`` say. Anything
    else (embedded) returns ``uac`` as it is: the embedding application chooses its observers."""
    if runner_options is None:
        return uac
    if "fileLogObserverFactory" in runner_options:  # twist
        configure_twist(runner_options, settings, sys.argv)
        return uac
    if "logfile" in runner_options:  # twistd
        observer = twistd_observer(runner_options, settings)
        if observer is not None:
            return LogObserverRoot(uac, observer)
    return uac
