"""The routing script: a Python module the proxy runs for each message, as Kamailio runs
its ``request_route``, ``failure_route[NAME]``, ``onreply_route`` (and ``[NAME]``), ``branch_route[NAME]`` and
``event_route[uac:reply]`` blocks.

A script (``[routing] script``, see conf/routing.py) marks its routes with decorators::

    from txuac.routing.script import request_route, failure_route

    @request_route
    def route(msg, uac, tm, rr, dialog, sl):
        tm.t_on_failure("TRUNKAUTH")
        tm.t_relay()

    @failure_route("TRUNKAUTH")
    def trunk_auth(msg, uac, tm, rr, dialog, sl):
        if uac.uac_auth() > 0:
            tm.t_relay()

Design: every route is called with the message first, then the five namespaces the
proxy builds (``uac``, ``tm``, ``rr``, ``dialog``, ``sl``; ``ROUTE_PARAMETERS``), in
that order. The script imports nothing but these decorators, so it loads before (and
without) the proxy; the loader checks that each route accepts those six arguments.
The message is the request in request, failure and branch routes, the reply in
``onreply_route``, the event in ``event_route``s.

``load_script(path)`` executes the file as a fresh module (a unique name per load) while
a registry of its own collects the decorated functions: two loads never share routes.
It returns a ``RouteTable``. Every load error (syntax, an exception while executing,
no ``request_route``, two of them, a failure route name used twice, a route that cannot
take the arguments) is a ConfigError naming the file and the line.

``call_route(route, *args)`` runs a route with the route context set (``current_route``)
and turns an exception into a ``ScriptFailure`` holding the traceback of the script's
frames, which the proxy logs once before answering 500. Functions of the namespaces
declare where Kamailio allows them with ``allowed_in`` (``UAC_FUNCTION_ROUTES``: the
README section 4 "This function can be used from ..." lines) and raise
``RouteContextError`` elsewhere.
"""

from __future__ import annotations

import contextlib
import enum
import functools
import importlib.util
import inspect
import itertools
import sys
import traceback
from collections.abc import Callable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from types import MappingProxyType, TracebackType
from typing import Any, TypeVar

from txuac.errors import ConfigError, RouteContextError

# The arguments every route is called with, in this order.
ROUTE_PARAMETERS = ("msg", "uac", "tm", "rr", "dialog", "sl")
# event_route[tm:branch-failure:NAME], armed by tm.t_on_branch_failure("NAME").
BRANCH_FAILURE_EVENT = "tm:branch-failure"


class RouteKind(enum.Enum):
    """The kinds of route (Kamailio's route block types)."""

    REQUEST = "request_route"
    FAILURE = "failure_route"
    BRANCH = "branch_route"
    ONREPLY = "onreply_route"
    EVENT = "event_route"


ANY_ROUTE = tuple(RouteKind)


@dataclass(frozen=True)
class Route:
    """One route of a script: its kind, its name (failure and event routes), the function,
    and where it is defined."""

    kind: RouteKind
    name: str | None
    function: Callable[..., Any]
    path: str
    line: int

    @property
    def label(self) -> str:
        """Kamailio's spelling: ``failure_route[TRUNKAUTH]``, ``request_route``."""
        return f"{self.kind.value}[{self.name}]" if self.name is not None else self.kind.value

    @functools.cached_property
    def context(self) -> "RouteContext":
        """What ``current_route()`` says while this route runs (one, immutable, per route)."""
        return RouteContext(self.kind, self.name)


@dataclass(frozen=True)
class RouteTable:
    """The routes of one loaded script."""

    path: str
    request: Route
    failure: Mapping[str, Route] = field(default_factory=dict)
    onreply: Route | None = None
    branch: Mapping[str, Route] = field(default_factory=dict)
    events: Mapping[str, Route] = field(default_factory=dict)
    replies: Mapping[str, Route] = field(default_factory=dict)  # onreply_route[NAME] (tm.t_on_reply)
    module: Any = field(default=None, repr=False, compare=False)


class _Registry:
    """The routes a script declares while it executes."""

    def __init__(self, path: str):
        self.path = path
        self.request: Route | None = None
        self.failure: dict[str, Route] = {}
        self.onreply: Route | None = None
        self.branch: dict[str, Route] = {}
        self.events: dict[str, Route] = {}
        self.replies: dict[str, Route] = {}

    def add(self, kind: RouteKind, name: str | None, function: Callable[..., Any]) -> None:
        route = Route(kind, name, function, self.path, _definition_line(function))
        _check_route_function(route)
        if kind is RouteKind.EVENT and name in (BRANCH_FAILURE_EVENT, BRANCH_FAILURE_EVENT + ":"):
            # Kamailio needs the name too (t_on_branch_failure arms one); unnamed, it would never run.
            raise _script_error(route, f"{route.label} needs a name: @event_route(\"{BRANCH_FAILURE_EVENT}:NAME\"), "
                                       f"run for the branches of a transaction that called "
                                       f"tm.t_on_branch_failure(\"NAME\")")
        named = {RouteKind.FAILURE: self.failure, RouteKind.BRANCH: self.branch, RouteKind.EVENT: self.events,
                 RouteKind.ONREPLY: self.replies}
        if kind in named and (name is not None or kind is not RouteKind.ONREPLY):
            table = named[kind]
            if name in table:
                raise _script_error(route, f"{route.label} is defined twice (first at line {table[name].line})")
            table[name] = route  # type: ignore[index]
            return
        attribute = {RouteKind.REQUEST: "request", RouteKind.ONREPLY: "onreply"}[kind]
        first = getattr(self, attribute)
        if first is not None:
            raise _script_error(route, f"{route.label} is defined twice (first at line {first.line})")
        setattr(self, attribute, route)


_registry: ContextVar[_Registry | None] = ContextVar("txuac_routing_registry", default=None)
_module_numbers = itertools.count(1)

F = TypeVar("F", bound=Callable[..., Any])


def _definition_line(function: Callable[..., Any]) -> int:
    code = getattr(function, "__code__", None)
    return code.co_firstlineno if code is not None else 0


def _script_error(route: Route, text: str) -> ConfigError:
    return ConfigError(f"{route.path}:{route.line}: {text}")


def _check_route_function(route: Route) -> None:
    """Refuse at load time what would fail at every call."""
    function = route.function
    if not callable(function):
        raise _script_error(route, f"{route.label} must decorate a function")
    if inspect.iscoroutinefunction(function) or inspect.isgeneratorfunction(function):
        raise _script_error(route, f"{route.label} must be a plain function: routes run synchronously")
    try:
        inspect.signature(function).bind(*ROUTE_PARAMETERS)
    except (TypeError, ValueError):
        raise _script_error(route, f"{route.label} must accept the arguments "
                                   f"({', '.join(ROUTE_PARAMETERS)})") from None


def _active_registry(decorator: str) -> _Registry:
    registry = _registry.get()
    if registry is None:
        raise ConfigError(f"@{decorator} declares a route only while txuac loads the script (load_script)")
    return registry


def _unnamed_route(kind: RouteKind) -> Callable[[F], F]:
    def decorator(function: F) -> F:
        registry = _active_registry(kind.value)
        if isinstance(function, str):
            raise ConfigError(f"{registry.path}: @{kind.value} takes no name (use @{kind.value}, "
                              f"not @{kind.value}({function!r}))")
        registry.add(kind, None, function)
        return function
    decorator.__name__ = kind.value
    decorator.__doc__ = f"Marks the script's {kind.value} (one at most)."
    return decorator


def _named_route(kind: RouteKind) -> Callable[[str], Callable[[F], F]]:
    def named(name: str) -> Callable[[F], F]:
        registry = _active_registry(kind.value)
        if not isinstance(name, str) or not name:
            raise ConfigError(f"{registry.path}: @{kind.value} needs a name: @{kind.value}(\"NAME\")")

        def decorator(function: F) -> F:
            registry.add(kind, name, function)
            return function
        return decorator
    named.__name__ = kind.value
    named.__doc__ = f"Marks a {kind.value} under a name (each name once)."
    return named


request_route = _unnamed_route(RouteKind.REQUEST)
_every_reply_route = _unnamed_route(RouteKind.ONREPLY)
_named_reply_route = _named_route(RouteKind.ONREPLY)


def onreply_route(function_or_name: Any) -> Any:
    """``@onreply_route``: every reply received (one at most); ``@onreply_route("NAME")``:
    the replies of the transactions that armed it with ``tm.t_on_reply("NAME")``, after
    the first (Kamailio's onreply_route and onreply_route[NAME])."""
    if isinstance(function_or_name, str):
        return _named_reply_route(function_or_name)
    return _every_reply_route(function_or_name)


branch_route = _named_route(RouteKind.BRANCH)
failure_route = _named_route(RouteKind.FAILURE)
event_route = _named_route(RouteKind.EVENT)


def load_script(path: str) -> RouteTable:
    """Execute the script at ``path`` as a new module and return its routes."""
    try:
        with open(path, "rb") as f:
            source = f.read()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the routing script: {e.strerror or e}") from None
    try:
        code = compile(source, path, "exec", dont_inherit=True)
    except SyntaxError as e:
        raise ConfigError(f"{path}:{e.lineno or 0}: syntax error: {e.msg}") from None
    except ValueError as e:  # null bytes
        raise ConfigError(f"{path}: not a Python source file: {e}") from None
    name = f"_txuac_routing_script_{next(_module_numbers)}"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    registry = _Registry(path)
    token = _registry.set(registry)
    # In sys.modules while it runs (dataclasses and pickling look their module up there).
    sys.modules[name] = module
    try:
        exec(code, module.__dict__)
    except ConfigError:
        sys.modules.pop(name, None)
        raise
    except (Exception, SystemExit) as e:  # sys.exit() in a script is a load error too
        sys.modules.pop(name, None)
        line = _last_script_line(e.__traceback__, path)
        raise ConfigError(f"{path}:{line}: {type(e).__name__} while loading the routing script: {e}") from None
    finally:
        _registry.reset(token)
    if registry.request is None:
        sys.modules.pop(name, None)
        raise ConfigError(f"{path}: no @request_route: the script must have one")
    return RouteTable(path=path, request=registry.request, failure=MappingProxyType(registry.failure),
                      onreply=registry.onreply, branch=MappingProxyType(registry.branch),
                      replies=MappingProxyType(registry.replies),
                      events=MappingProxyType(registry.events), module=module)


def _last_script_line(tb: TracebackType | None, path: str) -> int:
    line = 0
    for frame in traceback.extract_tb(tb):
        if frame.filename == path:
            line = frame.lineno or 0
    return line


@dataclass(frozen=True)
class RouteContext:
    """The route running now: its kind and name (failure and event routes)."""

    kind: RouteKind
    name: str | None = None


_current: ContextVar[RouteContext | None] = ContextVar("txuac_routing_current_route", default=None)


def current_route() -> RouteContext | None:
    """The route running now, or None outside any route."""
    return _current.get()


@contextlib.contextmanager
def running_route(kind: RouteKind, name: str | None = None) -> Iterator[RouteContext]:
    """Sets the running route for the duration of the block (call_route does it)."""
    context = RouteContext(kind, name)
    token = _current.set(context)
    try:
        yield context
    finally:
        _current.reset(token)


def allowed_in(*kinds: RouteKind, events: tuple[str, ...] = ()) -> Callable[[F], F]:
    """Decorates a script-callable function: RouteContextError unless it is called from a
    route of one of ``kinds``, or from an event route named in ``events`` or named
    ``EVENT:anything`` (Kamailio's BRANCH_FAILURE_ROUTE is
    ``event_route[tm:branch-failure:NAME]``)."""
    allowed = frozenset(kinds)
    places = [kind.value for kind in kinds] + [f"event_route[{name}]" for name in events]

    def event_allowed(name: str | None) -> bool:
        return name is not None and any(name == event or name.startswith(event + ":") for event in events)

    def decorator(function: F) -> F:
        @functools.wraps(function)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            context = _current.get()
            if context is None:
                raise RouteContextError(f"{function.__name__}() can be called from a route only "
                                        f"({', '.join(places)})")
            if context.kind not in allowed and not (context.kind is RouteKind.EVENT and event_allowed(context.name)):
                running = context.kind.value + (f"[{context.name}]" if context.name is not None else "")
                raise RouteContextError(f"{function.__name__}() can be used from {', '.join(places)}, "
                                        f"not from {running}")
            return function(*args, **kwargs)
        guarded.allowed_routes = allowed  # type: ignore[attr-defined]
        guarded.allowed_events = tuple(events)  # type: ignore[attr-defined]
        return guarded  # type: ignore[return-value]
    return decorator


_REQUEST_BRANCH = ((RouteKind.REQUEST, RouteKind.BRANCH), ())
_FAILURE = ((RouteKind.FAILURE,), (BRANCH_FAILURE_EVENT,))
# Kamailio README section 4 "This function can be used from ...": the arguments of
# allowed_in for each uac function (LOCAL_ROUTE, for uac_req_send, has no txuac equivalent).
UAC_FUNCTION_ROUTES: Mapping[str, tuple[tuple[RouteKind, ...], tuple[str, ...]]] = MappingProxyType({
    "uac_replace_from": _REQUEST_BRANCH,
    "uac_replace_to": _REQUEST_BRANCH,
    "uac_restore_from": ((RouteKind.REQUEST,), ()),
    "uac_restore_to": ((RouteKind.REQUEST,), ()),
    "uac_auth": _FAILURE,
    "uac_auth_mode": _FAILURE,
    # Kamailio runs event_route[uac:reply] as a REQUEST_ROUTE: a request may be sent from it.
    "uac_req_send": ((RouteKind.REQUEST, RouteKind.FAILURE, RouteKind.BRANCH, RouteKind.ONREPLY), ("uac:reply",)),
    "uac_reg_lookup": (ANY_ROUTE, ()),
    "uac_reg_lookup_uri": (ANY_ROUTE, ()),
    "uac_reg_status": (ANY_ROUTE, ()),
    "uac_reg_request_to": ((RouteKind.REQUEST, RouteKind.FAILURE, RouteKind.BRANCH), ()),
    "uac_reg_enable": (ANY_ROUTE, ()),
    "uac_reg_disable": (ANY_ROUTE, ()),
    "uac_reg_refresh": (ANY_ROUTE, ()),
})


def allowed_like(uac_function: str) -> Callable[[F], F]:
    """``allowed_in`` with the routes Kamailio allows for ``uac_function``."""
    kinds, events = UAC_FUNCTION_ROUTES[uac_function]
    return allowed_in(*kinds, events=events)


@dataclass(frozen=True)
class ScriptFailure:
    """A route raised: the exception and the traceback of the script's frames."""

    route: Route
    exception: BaseException
    traceback: str

    def __str__(self) -> str:
        return self.traceback


def call_route(route: Route, *args: Any) -> Any:
    """Run ``route`` with the route context set; its result, or a ScriptFailure when it
    raised (the proxy answers 500 and logs the failure once)."""
    token = _current.set(route.context)  # running_route's work, without a generator per request
    try:
        return route.function(*args)
    except (Exception, SystemExit) as e:  # a script's sys.exit() must not stop txuac
        return ScriptFailure(route, e, _script_traceback(route, e))
    finally:
        _current.reset(token)


def _script_traceback(route: Route, exception: BaseException) -> str:
    """The frames of the script file (not txuac's) and the exception line."""
    frames = [frame for frame in traceback.extract_tb(exception.__traceback__) if frame.filename == route.path]
    lines = [f"Traceback of {route.label} ({route.path}, most recent call last):\n"]
    lines += traceback.format_list(frames)
    lines += traceback.format_exception_only(type(exception), exception)
    return "".join(lines)
