"""A JSON-RPC 2.0 dispatcher shaped as Kamailio's jsonrpcs module, independent of HTTP.

Requests are ``{"jsonrpc": "2.0", "method": ..., "params": [...], "id": ...}``;
params are positional (an array) or by name (an object). A method returns a value
or a Deferred; None becomes ``{}``, as jsonrpcs answers an RPC that adds nothing.
Application errors are Kamailio's ``{"code": 404, "message": "Record not found"}``;
protocol errors use the JSON-RPC codes with jsonrpcs' messages. A batch (an array of
requests) is answered with an array; requests without ``id`` in a batch are
notifications and get no answer, a single request without ``id`` is answered
without ``id`` (as jsonrpcs does).

Methods registered with ``audit=True`` (the ones that change state) are logged at info
in the ``txuac.admin.audit`` namespace with the caller's address, the parameters (secrets
masked) and the outcome.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Callable

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from txuac.admin.logs import is_secret_name
from txuac.errors import TxuacError
from txuac.ratelimitedlog import RateLimitedLog

log = Logger()
audit_log = Logger(namespace="txuac.admin.audit")

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603

# jsonrpcs' texts for the JSON-RPC codes (K:src/modules/jsonrpcs/jsonrpcs_mod.c).
PROTOCOL_MESSAGES = {
    PARSE_ERROR: "Parse Error",
    INVALID_REQUEST: "Invalid Request",
    METHOD_NOT_FOUND: "Method Not Found",
    INVALID_PARAMS: "Invalid Parameters",
    INTERNAL_ERROR: "Internal Error",
}

# The HTTP status of a single request's answer: an application code that is an HTTP
# status is used as such (jsonrpcs does so); protocol errors as JSON-RPC over HTTP.
_PROTOCOL_HTTP_STATUS = {PARSE_ERROR: 400, INVALID_REQUEST: 400, METHOD_NOT_FOUND: 404, INVALID_PARAMS: 400,
                         INTERNAL_ERROR: 500}
_INTEGER = re.compile(r"-?[0-9]{1,18}\Z")
# Arrays and objects nested deeper than this are refused: no method takes more than a
# flat list, and deep nesting only costs stack.
MAX_DEPTH = 32
SECRET_MASK = "********"


class RPCError(TxuacError):
    """An error answered to the caller: ``code``, ``message`` and optional ``data``."""

    def __init__(self, code: int, message: str | None = None, data: Any = None):
        self.code = code
        self.message = message if message is not None else PROTOCOL_MESSAGES.get(code, "Unexpected Error")
        self.data = data
        super().__init__(f"error {code}: {self.message}")

    def as_json(self) -> dict:
        error = {"code": self.code, "message": self.message}
        if self.data is not None:
            error["data"] = self.data
        return error

    @property
    def http_status(self) -> int:
        if 100 <= self.code <= 599:
            return self.code
        return _PROTOCOL_HTTP_STATUS.get(self.code, 500)


@dataclass(frozen=True)
class Param:
    """A parameter of a method: its name and type (``str`` or ``int``)."""

    name: str
    kind: type = str


@dataclass(frozen=True)
class Method:
    """A registered method. ``params`` None accepts anything (the function validates);
    fewer than ``required`` arguments is answered with ``missing``."""

    name: str
    function: Callable[..., Any]
    params: tuple[Param, ...] | None
    required: int
    missing: RPCError
    doc: str
    audit: bool = False

    def arguments(self, params: Any) -> list:
        """The positional arguments for ``params`` (a list, a dict or absent), coerced."""
        if params is None:
            params = []
        if self.params is None:
            return list(params.values()) if isinstance(params, dict) else list(params)
        if isinstance(params, dict):
            params = self._by_name(params)
        if len(params) > len(self.params):
            raise RPCError(INVALID_PARAMS, data=f"{self.name} takes at most {len(self.params)} parameter(s), "
                                                f"got {len(params)}")
        if len(params) < self.required:
            raise self.missing
        return [self._coerce(spec, value, position) for position, (spec, value) in
                enumerate(zip(self.params, params), 1)]

    def _by_name(self, params: dict) -> list:
        names = [spec.name for spec in self.params]
        unknown = sorted(set(params) - set(names))
        if unknown:
            raise RPCError(INVALID_PARAMS, data=f"{self.name} has no parameter(s) {', '.join(unknown)}; "
                                                f"it takes {', '.join(names) or 'none'}")
        values = []
        for name in names:
            if name not in params:
                break  # the ones after a gap count as missing
            values.append(params[name])
        if len(values) < len(params):
            raise self.missing
        return values

    def _coerce(self, spec: Param, value: Any, position: int):
        # A number where a string is expected is taken as its decimal text (jsonrpcs'
        # "." conversion), a decimal string where an integer is expected as the integer.
        if spec.kind is int:
            if isinstance(value, int) and not isinstance(value, bool):
                return value
            if isinstance(value, str) and _INTEGER.match(value.strip()):
                return int(value)
        elif isinstance(value, str):
            return value
        elif isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        kind = "an integer" if spec.kind is int else "a string"
        raise RPCError(INVALID_PARAMS, data=f"{self.name}: parameter {position} ({spec.name}) must be {kind}, "
                                            f"got {_json_type(value)}")


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return f"the number {value!r}"
    if isinstance(value, str):
        return f"the string {value[:40]!r}"
    return "an array" if isinstance(value, list) else "an object"


@dataclass(frozen=True)
class Answer:
    """What to send back: the HTTP status and the body (None: nothing, 204)."""

    status: int
    body: bytes | None


class Dispatcher:
    """Methods by name; ``handle(body, peer)`` answers one HTTP request body. ``clock`` (a
    reactor) times the rate-limited warnings about refused bodies; ``warnings.flush()``
    when done with it."""

    def __init__(self, clock: IReactorTime | None = None) -> None:
        if clock is None:
            from twisted.internet import reactor as clock
        self.methods: dict[str, Method] = {}
        self.warnings = RateLimitedLog(log, clock)

    def register(self, name: str, function: Callable[..., Any], params: tuple[Param, ...] | None = (),
                 required: int | None = None, missing: RPCError | None = None, doc: str = "",
                 audit: bool = False) -> None:
        """Add a method; ``audit``: it changes state, and every call is logged in the audit log."""
        if params is not None and required is None:
            required = len(params)
        self.methods[name] = Method(name, function, params, required or 0,
                                    missing or RPCError(INVALID_PARAMS, data=f"{name}: missing parameter(s)"), doc,
                                    audit)

    def names(self) -> list[str]:
        return sorted(self.methods)

    def handle(self, body: bytes, peer: str = "-") -> defer.Deferred:
        """The Answer to a request body (one request or a batch) from ``peer``."""
        try:
            document = json.loads(body)
        except (UnicodeDecodeError, ValueError) as e:
            return defer.succeed(self._single(_error_object(None, RPCError(PARSE_ERROR, data=str(e)[:200]))))
        except RecursionError:
            document = None
            too_deep = True
        else:
            too_deep = _nested_deeper_than(document, MAX_DEPTH)
        if too_deep:
            self.warnings.emit(f"too deeply nested bodies from {peer.rpartition(':')[0] or peer}",
                               "refused a JSON-RPC body from {peer}: nested deeper than {depth} levels",
                               peer=peer, depth=MAX_DEPTH)
            error = RPCError(INVALID_REQUEST, data=f"arrays and objects nested deeper than {MAX_DEPTH} levels")
            return defer.succeed(self._single(_error_object(None, error)))
        if isinstance(document, list):
            if not document:
                return defer.succeed(self._single(_error_object(None, RPCError(INVALID_REQUEST,
                                                                               data="empty batch"))))
            d = defer.gatherResults([self.call(request, in_batch=True, peer=peer) for request in document])
            d.addCallback(self._batch)
            return d
        return self.call(document, peer=peer).addCallback(self._single)

    def call(self, request: Any, in_batch: bool = False, peer: str = "-") -> defer.Deferred:
        """The response object to one request object (None for a notification in a batch)."""
        if not isinstance(request, dict):
            return defer.succeed(_error_object(None, RPCError(INVALID_REQUEST, data="a request is an object")))
        has_id = "id" in request
        request_id = request.get("id")
        if has_id and not (request_id is None or isinstance(request_id, (str, int, float))) \
                or isinstance(request_id, bool):
            return defer.succeed(_error_object(None, RPCError(INVALID_REQUEST, data="id must be a string or a number")))
        reply_id = request_id if has_id else _NO_ID
        if request.get("jsonrpc") != "2.0":
            return defer.succeed(_error_object(reply_id, RPCError(INVALID_REQUEST, data='jsonrpc must be "2.0"')))
        name = request.get("method")
        if not isinstance(name, str):
            return defer.succeed(_error_object(reply_id, RPCError(INVALID_REQUEST,
                                                                  data="method must be a string")))
        params = request.get("params")
        if params is not None and not isinstance(params, (list, dict)):
            return defer.succeed(_error_object(reply_id, RPCError(INVALID_REQUEST,
                                                                  data="params must be an array or an object")))
        d = self.run(name, params, peer)
        d.addCallbacks(lambda result: _result_object(reply_id, result),
                       lambda failure: _error_object(reply_id, failure.value))
        if in_batch and not has_id:
            d.addCallback(lambda _: None)
        return d

    def run(self, name: str, params: Any, peer: str = "-") -> defer.Deferred:
        """The method's own result (None stays None) or an RPCError failure, audited:
        for transports that do not speak JSON-RPC (binrpc)."""
        d = self._run(name, params)
        method = self.methods.get(name)
        if method is not None and method.audit:
            d.addBoth(_audited, method, params, peer)
        return d

    def _run(self, name: str, params: Any) -> defer.Deferred:
        method = self.methods.get(name)
        if method is None:
            return defer.fail(RPCError(METHOD_NOT_FOUND, data=f"no method {name[:80]!r}"))
        try:
            arguments = method.arguments(params)
        except RPCError as e:
            return defer.fail(e)
        d = defer.maybeDeferred(method.function, *arguments)
        d.addErrback(self._unexpected, name)
        return d

    def _unexpected(self, failure, name: str):
        if failure.check(RPCError):
            return failure
        log.failure("RPC method {method} failed", failure, method=name)
        raise RPCError(INTERNAL_ERROR, data=f"{name} failed; see the log")

    def _single(self, response: dict) -> Answer:
        error = response.get("error")
        status = 200 if error is None else RPCError(error["code"]).http_status
        return Answer(status, _encode(response))

    def _batch(self, responses: list) -> Answer:
        answered = [response for response in responses if response is not None]
        return Answer(200, _encode(answered)) if answered else Answer(204, None)


_NO_ID = object()


def _nested_deeper_than(document: Any, limit: int) -> bool:
    pending = [(document, 1)] if isinstance(document, (list, dict)) else []
    while pending:
        value, depth = pending.pop()
        if depth > limit:
            return True
        children = value.values() if isinstance(value, dict) else value
        pending.extend((child, depth + 1) for child in children if isinstance(child, (list, dict)))
    return False


def masked_params(method: Method, params: Any) -> Any:
    """``params`` as the audit log shows them: password-like values (by parameter name) masked."""
    if isinstance(params, dict):
        return {key: SECRET_MASK if is_secret_name(str(key)) and value not in ("", ".", None) else value
                for key, value in params.items()}
    if isinstance(params, list):
        names = [spec.name for spec in method.params or ()]
        return [SECRET_MASK if position < len(names) and is_secret_name(names[position])
                and value not in ("", ".", None) else value for position, value in enumerate(params)]
    return params


def _audited(outcome: Any, method: Method, params: Any, peer: str) -> Any:
    if isinstance(outcome, Failure):
        error = outcome.value
        text = f"error {error.code}: {error.message}" if isinstance(error, RPCError) else "failed"
    else:
        text = "ok"
    audit_log.info("{peer} called {method} {params}: {outcome}", peer=peer, method=method.name,
                   params=masked_params(method, params if params is not None else []), outcome=text)
    return outcome


def internal_error_answer() -> Answer:
    """The answer to a request that failed inside txuac (the details are in the log)."""
    return Answer(500, _encode(_error_object(None, RPCError(INTERNAL_ERROR, data="see the log"))))


def _result_object(request_id: Any, result: Any) -> dict:
    response = {"jsonrpc": "2.0", "result": {} if result is None else result}
    if request_id is not _NO_ID:
        response["id"] = request_id
    return response


def _error_object(request_id: Any, error: RPCError) -> dict:
    response = {"jsonrpc": "2.0", "error": error.as_json()}
    if request_id is not _NO_ID:
        response["id"] = request_id
    return response


def _encode(document: Any) -> bytes:
    return json.dumps(document, ensure_ascii=False).encode("utf-8") + b"\n"
