"""txuac.routing.script: loading routing scripts, load errors with file and line, routes
run with their context and exceptions turned into ScriptFailure, allowed_in."""

from __future__ import annotations

import os
import sys
import textwrap

from twisted.trial.unittest import SynchronousTestCase

from txuac.errors import ConfigError, RouteContextError
from txuac.routing.script import (
    ANY_ROUTE,
    ROUTE_PARAMETERS,
    UAC_FUNCTION_ROUTES,
    RouteKind,
    ScriptFailure,
    allowed_in,
    allowed_like,
    call_route,
    current_route,
    load_script,
    request_route,
    running_route,
)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXAMPLE = os.path.join(ROOT, "conf", "routing.py")
HEADER = "from txuac.routing.script import request_route, failure_route, onreply_route, branch_route, event_route\n"
ARGS = ("msg", "uac", "tm", "rr", "dialog", "sl")

GOOD = HEADER + textwrap.dedent("""
    seen = []

    @request_route
    def route(msg, uac, tm, rr, dialog, sl):
        seen.append(("request", msg))
        return "relayed"

    @failure_route("TRUNKAUTH")
    def trunk_auth(msg, uac, tm, rr, dialog, sl):
        return "auth"

    @failure_route("OTHER")
    def other(msg, *namespaces):
        return len(namespaces)

    @onreply_route
    def reply(msg, uac, tm, rr, dialog, sl):
        return "reply"

    @branch_route("BRANCH")
    def branch(msg, uac, tm, rr, dialog, sl):
        return "branch"

    @event_route("uac:reply")
    def uac_reply(msg, uac, tm, rr, dialog, sl):
        return "event"
    """)


class ScriptFiles:
    def write(self, text: str, name: str = "routing.py") -> str:
        directory = os.path.abspath(self.mktemp())  # type: ignore[attr-defined]
        os.makedirs(directory)
        path = os.path.join(directory, name)
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        return path

    def assertLoadError(self, text: str, line: int | None, *words: str) -> str:
        """Loading ``text`` fails naming the file, ``line`` (None: no line) and ``words``."""
        path = self.write(text)
        with self.assertRaises(ConfigError) as caught:  # type: ignore[attr-defined]
            load_script(path)
        message = str(caught.exception)
        prefix = f"{path}:{line}: " if line is not None else f"{path}: "
        self.assertTrue(message.startswith(prefix), message)  # type: ignore[attr-defined]
        for word in words:
            self.assertIn(word, message)  # type: ignore[attr-defined]
        return message


class LoadTests(ScriptFiles, SynchronousTestCase):
    def test_routes_of_a_script(self):
        path = self.write(GOOD)
        table = load_script(path)
        self.assertEqual(table.path, path)
        self.assertEqual((table.request.kind, table.request.name, table.request.line), (RouteKind.REQUEST, None, 5))
        self.assertEqual(sorted(table.failure), ["OTHER", "TRUNKAUTH"])
        self.assertEqual(table.failure["TRUNKAUTH"].label, "failure_route[TRUNKAUTH]")
        self.assertEqual(table.onreply.kind, RouteKind.ONREPLY)
        self.assertEqual(table.branch["BRANCH"].label, "branch_route[BRANCH]")
        self.assertEqual(list(table.events), ["uac:reply"])
        self.assertEqual(table.events["uac:reply"].label, "event_route[uac:reply]")
        self.assertEqual(call_route(table.request, "INVITE", *ARGS[1:]), "relayed")
        self.assertEqual(table.module.seen, [("request", "INVITE")])
        self.assertEqual(call_route(table.failure["OTHER"], *ARGS), 5)
        self.assertEqual(call_route(table.events["uac:reply"], *ARGS), "event")

    def test_only_a_request_route(self):
        table = load_script(self.write(HEADER + "@request_route\ndef r(msg, uac, tm, rr, dialog, sl): pass\n"))
        self.assertEqual((dict(table.failure), table.onreply, dict(table.branch), dict(table.events)),
                         ({}, None, {}, {}))

    def test_two_loads_do_not_mix(self):
        first = load_script(self.write(GOOD))
        second = load_script(self.write(HEADER + "@request_route\ndef other(msg, uac, tm, rr, dialog, sl): pass\n"))
        self.assertEqual(second.request.function.__name__, "other")
        self.assertEqual((dict(second.failure), second.onreply), ({}, None))
        self.assertEqual(first.request.function.__name__, "route")
        self.assertEqual(sorted(first.failure), ["OTHER", "TRUNKAUTH"])
        self.assertNotEqual(first.module.__name__, second.module.__name__)
        # The same file twice: two modules, two registries, no "defined twice".
        path = self.write(GOOD)
        self.assertIsNot(load_script(path).module, load_script(path).module)

    def test_decorators_outside_a_load(self):
        with self.assertRaises(ConfigError) as caught:
            request_route(lambda *args: None)
        self.assertIn("load_script", str(caught.exception))

    def test_example_script_loads(self):
        table = load_script(EXAMPLE)
        self.assertEqual(table.request.function.__name__, "route")
        self.assertEqual(list(table.failure), ["TRUNKAUTH"])
        self.assertIsNotNone(table.onreply)
        self.assertEqual(list(table.events), ["uac:reply"])


class LoadErrorTests(ScriptFiles, SynchronousTestCase):
    def test_syntax_error_names_file_and_line(self):
        self.assertLoadError(HEADER + "\n@request_route\ndef route(msg:\n    pass\n", 4, "syntax error")

    def test_exception_while_executing(self):
        text = HEADER + "import os\n\ndef helper():\n    return 1 / 0\n\nhelper()\n"
        self.assertLoadError(text, 5, "ZeroDivisionError", "division by zero")
        self.assertLoadError("import txuac_no_such_module\n", 1, "ModuleNotFoundError", "txuac_no_such_module")

    def test_exit_while_executing(self):
        self.assertLoadError("import sys\nsys.exit(3)\n", 2, "SystemExit")

    def test_failed_load_leaves_no_module(self):
        before = set(sys.modules)
        self.assertLoadError("raise RuntimeError('no')\n", 1, "RuntimeError", "no")
        self.assertEqual({name for name in set(sys.modules) - before if "routing_script" in name}, set())

    def test_missing_request_route(self):
        text = HEADER + "@failure_route('A')\ndef a(msg, uac, tm, rr, dialog, sl): pass\n"
        self.assertLoadError(text, None, "no @request_route")
        self.assertLoadError("", None, "no @request_route")

    def test_two_request_routes(self):
        text = HEADER + ("@request_route\ndef a(msg, uac, tm, rr, dialog, sl): pass\n\n"
                         "@request_route\ndef b(msg, uac, tm, rr, dialog, sl): pass\n")
        self.assertLoadError(text, 5, "request_route is defined twice", "first at line 2")

    def test_failure_route_name_twice(self):
        text = HEADER + ("@failure_route('AUTH')\ndef a(msg, uac, tm, rr, dialog, sl): pass\n\n"
                         "@failure_route('AUTH')\ndef b(msg, uac, tm, rr, dialog, sl): pass\n"
                         "@request_route\ndef r(msg, uac, tm, rr, dialog, sl): pass\n")
        self.assertLoadError(text, 5, "failure_route[AUTH] is defined twice", "first at line 2")

    def test_event_and_onreply_twice(self):
        text = HEADER + ("@event_route('uac:reply')\ndef a(msg, uac, tm, rr, dialog, sl): pass\n"
                         "@event_route('uac:reply')\ndef b(msg, uac, tm, rr, dialog, sl): pass\n")
        self.assertLoadError(text, 4, "event_route[uac:reply] is defined twice")
        text = HEADER + ("@onreply_route\ndef a(msg, uac, tm, rr, dialog, sl): pass\n"
                         "@onreply_route\ndef b(msg, uac, tm, rr, dialog, sl): pass\n")
        self.assertLoadError(text, 4, "onreply_route is defined twice")

    def test_decorator_misuse(self):
        self.assertLoadError(HEADER + "@failure_route\ndef a(msg, uac, tm, rr, dialog, sl): pass\n", None,
                             "@failure_route needs a name")
        self.assertLoadError(HEADER + "@request_route('MAIN')\ndef a(msg, uac, tm, rr, dialog, sl): pass\n", None,
                             "@request_route takes no name")

    def test_route_signatures(self):
        self.assertLoadError(HEADER + "@request_route\ndef a(msg): pass\n", 2, "must accept the arguments",
                             ", ".join(ROUTE_PARAMETERS))
        self.assertLoadError(HEADER + "@request_route\nasync def a(msg, uac, tm, rr, dialog, sl): pass\n", 2,
                             "synchronously")
        self.assertLoadError(HEADER + "@branch_route(\"B\")\ndef a(msg, uac, tm, rr, dialog, sl):\n    yield 1\n", 2,
                             "synchronously")

    def test_unnamed_branch_failure_route_is_refused(self):
        # Nothing would run it: tm.t_on_branch_failure("NAME") arms event_route[tm:branch-failure:NAME].
        for name in ("tm:branch-failure", "tm:branch-failure:"):
            self.assertLoadError(HEADER + "@request_route\ndef r(msg, uac, tm, rr, dialog, sl): pass\n"
                                 f"@event_route({name!r})\ndef b(msg, uac, tm, rr, dialog, sl): pass\n", 4,
                                 f"event_route[{name}] needs a name", "tm:branch-failure:NAME",
                                 "tm.t_on_branch_failure")
        table = load_script(self.write(HEADER + "@request_route\ndef r(msg, uac, tm, rr, dialog, sl): pass\n"
                                       "@event_route('tm:branch-failure:AUTH')\n"
                                       "def b(msg, uac, tm, rr, dialog, sl): pass\n"))
        self.assertEqual(list(table.events), ["tm:branch-failure:AUTH"])

    def test_unreadable_file(self):
        path = os.path.join(os.path.abspath(self.mktemp()), "missing.py")
        with self.assertRaises(ConfigError) as caught:
            load_script(path)
        self.assertTrue(str(caught.exception).startswith(path + ": cannot read"))


class CallRouteTests(ScriptFiles, SynchronousTestCase):
    def test_exception_gives_the_script_traceback(self):
        text = HEADER + textwrap.dedent("""
            def lookup(table, key):
                return table[key]

            @request_route
            def route(msg, uac, tm, rr, dialog, sl):
                return lookup({}, msg)
            """)
        path = self.write(text)
        table = load_script(path)
        failure = call_route(table.request, "alice", *ARGS[1:])
        self.assertIsInstance(failure, ScriptFailure)
        self.assertIsInstance(failure.exception, KeyError)
        self.assertIs(failure.route, table.request)
        self.assertIsNone(current_route())  # a route that raised leaves no context behind
        text = str(failure)
        self.assertIn("request_route", text)
        self.assertIn(f'File "{path}", line 8, in route', text)
        self.assertIn(f'File "{path}", line 4, in lookup', text)
        self.assertIn("return table[key]", text)
        self.assertTrue(text.endswith("KeyError: 'alice'\n"), text)
        self.assertNotIn("script.py", text)  # only the script's frames

    def test_exit_in_a_route_is_a_failure(self):
        text = HEADER + "import sys\n@request_route\ndef route(msg, uac, tm, rr, dialog, sl):\n    sys.exit(1)\n"
        failure = call_route(load_script(self.write(text)).request, *ARGS)
        self.assertIsInstance(failure, ScriptFailure)
        self.assertIsInstance(failure.exception, SystemExit)
        self.assertIn("line 5, in route", str(failure))

    def test_route_context_while_running(self):
        text = HEADER + textwrap.dedent("""
            from txuac.routing.script import current_route

            @request_route
            def route(msg, uac, tm, rr, dialog, sl):
                return current_route()

            @failure_route("AUTH")
            def auth(msg, uac, tm, rr, dialog, sl):
                return current_route()
            """)
        table = load_script(self.write(text))
        request = call_route(table.request, *ARGS)
        self.assertEqual((request.kind, request.name), (RouteKind.REQUEST, None))
        failure = call_route(table.failure["AUTH"], *ARGS)
        self.assertEqual((failure.kind, failure.name), (RouteKind.FAILURE, "AUTH"))
        self.assertIsNone(current_route())

    def test_context_error_in_the_script_traceback(self):
        @allowed_in(RouteKind.FAILURE)
        def uac_auth():
            return 1
        text = HEADER + "@request_route\ndef route(msg, uac, tm, rr, dialog, sl):\n    return uac()\n"
        path = self.write(text)
        failure = call_route(load_script(path).request, "INVITE", uac_auth, None, None, None, None)
        self.assertIsInstance(failure.exception, RouteContextError)
        self.assertIn(f'File "{path}", line 4, in route', str(failure))
        self.assertIn("uac_auth() can be used from failure_route, not from request_route", str(failure))


class AllowedInTests(SynchronousTestCase):
    def test_allowed_and_refused(self):
        @allowed_in(RouteKind.REQUEST, RouteKind.BRANCH)
        def uac_replace_from(display, uri):
            return (display, uri)
        with running_route(RouteKind.REQUEST):
            self.assertEqual(uac_replace_from("a", "sip:b@c"), ("a", "sip:b@c"))
        with running_route(RouteKind.BRANCH):
            self.assertEqual(uac_replace_from("", ""), ("", ""))
        for kind in (RouteKind.FAILURE, RouteKind.ONREPLY, RouteKind.EVENT):
            with running_route(kind, "X" if kind is not RouteKind.ONREPLY else None):
                with self.assertRaises(RouteContextError) as caught:
                    uac_replace_from("a", "sip:b@c")
                self.assertIn("uac_replace_from() can be used from request_route, branch_route, not from", str(caught.exception))
        with self.assertRaises(RouteContextError) as caught:
            uac_replace_from("a", "sip:b@c")
        self.assertIn("from a route only", str(caught.exception))
        self.assertEqual(uac_replace_from.__name__, "uac_replace_from")

    def test_event_routes_by_name(self):
        uac_auth = allowed_like("uac_auth")(lambda: 1)
        with running_route(RouteKind.FAILURE, "TRUNKAUTH"):
            self.assertEqual(uac_auth(), 1)
        with running_route(RouteKind.EVENT, "tm:branch-failure"):
            self.assertEqual(uac_auth(), 1)
        with running_route(RouteKind.EVENT, "tm:branch-failure:AUTH"):
            self.assertEqual(uac_auth(), 1)
        with running_route(RouteKind.EVENT, "tm:branch-failurex"):
            self.assertRaises(RouteContextError, uac_auth)
        with running_route(RouteKind.EVENT, "uac:reply"):
            with self.assertRaises(RouteContextError) as caught:
                uac_auth()
            self.assertIn("not from event_route[uac:reply]", str(caught.exception))
        with running_route(RouteKind.REQUEST):
            self.assertRaises(RouteContextError, uac_auth)

    def test_contexts_nest_and_reset(self):
        with running_route(RouteKind.REQUEST):
            with running_route(RouteKind.FAILURE, "A"):
                self.assertEqual(current_route().kind, RouteKind.FAILURE)
            self.assertEqual(current_route().kind, RouteKind.REQUEST)
        self.assertIsNone(current_route())

    def test_kamailio_table(self):
        """README section 4: where each uac function can be used."""
        def allowed(function):
            kinds, events = UAC_FUNCTION_ROUTES[function]
            return set(kinds), set(events)
        self.assertEqual(allowed("uac_replace_from"), ({RouteKind.REQUEST, RouteKind.BRANCH}, set()))
        self.assertEqual(allowed("uac_restore_to"), ({RouteKind.REQUEST}, set()))
        self.assertEqual(allowed("uac_auth"), ({RouteKind.FAILURE}, {"tm:branch-failure"}))
        self.assertEqual(allowed("uac_reg_status"), (set(ANY_ROUTE), set()))
        self.assertNotIn(RouteKind.EVENT, allowed("uac_reg_request_to")[0])
        # Kamailio's event_route[uac:reply] runs as a REQUEST_ROUTE: uac_req_send works there.
        self.assertEqual(allowed("uac_req_send"), ({RouteKind.REQUEST, RouteKind.FAILURE, RouteKind.BRANCH,
                                                    RouteKind.ONREPLY}, {"uac:reply"}))
