"""RFC 3261 section 17 transaction state machines (with RFC 6026's Accepted state).

Most tests are tables of rows ``(now, event, state, effects, deadline)`` run in
order against one transaction by ``TransactionTableMixin.run_rows`` (each table
in CLIENT_CASES / SERVER_CASES becomes its own test method; a failure lists
every mismatching row):

* ``now``: the explicit time of the event (no clock is ever read);
* ``event``: ``"start"``; ``"timer"`` (the row's time must be the transaction's
  deadline; nothing may fire a moment earlier); ``"timer*"`` (handle_timer at
  ``now`` with no checks, for catching up on several due timers); ``"fail"``
  (transport_failed); ``"recv 180"`` (client: a response with that status);
  ``"recv INVITE"`` / ``"recv OPTIONS"`` (server: a retransmission of its
  request); ``"recv ACK"`` (server: the ACK for its last response);
  ``"send 486"`` (server: a response from the TU); ``"-"`` (no call: only check
  the state, e.g. right after construction);
* ``state``: the State afterwards;
* ``effects``: the effects returned, as comma separated labels: ``tx INVITE`` /
  ``retx 486`` (Transmit of a request method or response status, first send or
  retransmission), ``deliver 180``, ``timeout F``, ``transport failed``,
  ``ended``; ``""`` for none;
* ``deadline``: ``deadline`` afterwards (None when no timer is pending).

Rows earlier in a table are the setup of the later ones. Retransmitted bytes
must equal the first transmission of the same message, and Deliver must carry
the very response that was fed in.
"""

from __future__ import annotations

import os
import re

from twisted.trial.unittest import SynchronousTestCase

from tests.support import corpus
from txuac.sip import Request, Response, make_response, parse_message
from txuac.sip.headers import TOP_VIA_VIEW
from txuac.sip.transaction import (
    ClientTransaction,
    Deliver,
    Ended,
    ServerTransaction,
    State,
    TimedOut,
    TimerSettings,
    Transmit,
    TransportFailed,
    client_key_for_request,
    client_key_for_response,
    make_ack,
    server_key,
)

CALLING = State.CALLING
TRYING = State.TRYING
PROCEEDING = State.PROCEEDING
ACCEPTED = State.ACCEPTED
COMPLETED = State.COMPLETED
CONFIRMED = State.CONFIRMED
TERMINATED = State.TERMINATED

DEFAULT = TimerSettings()  # T1=0.5, T2=4, T4=5 (RFC 3261 table 4)
FAST = TimerSettings(t1=0.1, t2=0.4, t4=1.0)
SLOW = TimerSettings(t1=1.0, t2=4.0, t4=5.0)

# Timers are compared and fired with this slack so that T1=0.1 sums such as
# 0.1 + 0.2 = 0.30000000000000004 still count as 0.3.
EPS = 1e-9
UDP, TCP = False, True


# --- messages -------------------------------------------------------------------------
def request(
    method: str = "INVITE",
    *,
    branch: str | None = "z9hG4bK776asdhds",
    sent_by: str = "pc33.atlanta.example.com:5060",
    cseq: int = 314159,
    uri: str = "sip:bob@biloxi.example.com",
    to: str = "Bob <sip:bob@biloxi.example.com>",
    routes: tuple[str, ...] = (),
) -> Request:
    via = f"Via: SIP/2.0/UDP {sent_by}" + (f";branch={branch}" if branch is not None else "")
    lines = [
        f"{method} {uri} SIP/2.0",
        via,
        "Max-Forwards: 70",
        *(f"Route: {route}" for route in routes),
        f"To: {to}",
        "From: Alice <sip:alice@atlanta.example.com>;tag=1928301774",
        "Call-ID: a84b4c76e66710@pc33.atlanta.example.com",
        f"CSeq: {cseq} {method}",
        "Contact: <sip:alice@pc33.atlanta.example.com>",
        "Content-Length: 0",
    ]
    message = parse_message(("\r\n".join(lines) + "\r\n\r\n").encode())
    assert isinstance(message, Request)
    return message


ROUTES = ("<sip:p1.example.com;lr>", "<sip:p2.example.com;lr>")
INVITE = request("INVITE", routes=ROUTES)
OPTIONS = request("OPTIONS", branch="z9hG4bKopt1", cseq=1)


def rfc4475(name: str) -> Request:
    with open(os.path.join(corpus.DATA_DIR, name + ".dat"), "rb") as f:
        message = parse_message(f.read())
    assert isinstance(message, Request)
    return message


# --- the driver -----------------------------------------------------------------------
def label(effect) -> str:
    if isinstance(effect, Transmit):
        first, second = effect.data.split(b" ", 2)[:2]
        word = second if first == b"SIP/2.0" else first
        return ("retx " if effect.retransmission else "tx ") + word.decode()
    if isinstance(effect, Deliver):
        return f"deliver {effect.response.status}"
    if isinstance(effect, TimedOut):
        return f"timeout {effect.timer}"
    if isinstance(effect, TransportFailed):
        return "transport failed"
    if isinstance(effect, Ended):
        return "ended"
    raise AssertionError(f"unknown effect {effect!r}")


def labels(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def times(label_: str, count: int) -> str:
    return ", ".join([label_] * count)


def ticks(state: State, effect: str, at: list[float], then: float | None) -> list[tuple]:
    """Timer rows firing at each time in ``at``; each row's deadline is the next time, the last one's ``then``."""
    deadlines = [*at[1:], then]
    return [(now, "timer", state, effect, deadline) for now, deadline in zip(at, deadlines)]


def approx(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


class TransactionTableMixin:
    """Runs tables (see the module docstring), reporting every mismatching row, not just the first."""

    def check_rows(self, tx: ClientTransaction | ServerTransaction, rows: list[tuple], name: str = "") -> list[str]:
        errors: list[str] = []
        responses: dict[int, Response] = {}
        first_sent: dict[str, bytes] = {}
        request = tx.request  # a client transaction lets it go once a final response came

        def response(status: int) -> Response:
            if status not in responses:
                responses[status] = make_response(tx.request, status, to_tag="t")
            return responses[status]

        def check(ok: bool, what: str, got, want) -> None:
            if not ok:
                errors.append(f"{name}: row {index} ({now}, {event!r}): {what}: got {got!r}, want {want!r}")

        for index, (now, event, state, expected, deadline) in enumerate(rows):
            fed: Response | None = None
            sent: Response | None = None
            previous_last = getattr(tx, "last_response", None)
            verb, _, arg = event.partition(" ")
            if event == "-":
                effects = []
            elif event == "start":
                effects = tx.start(now)
            elif event == "timer":
                check(approx(tx.deadline) == approx(now), "deadline before firing", tx.deadline, now)
                early = tx.handle_timer(now - 1e-6)
                check(early == [], "fired early", [label(e) for e in early], [])
                effects = tx.handle_timer(now + EPS)
            elif event == "timer*":
                effects = tx.handle_timer(now)
            elif event == "fail":
                effects = tx.transport_failed(now)
            elif verb == "recv" and arg.isdigit():
                fed = response(int(arg))
                effects = tx.receive(fed, now)
            elif verb == "recv" and arg == "ACK":
                effects = tx.receive(make_ack(tx.request, tx.last_response or response(486)), now)
            elif verb == "recv":
                assert arg == tx.request.method, event
                effects = tx.receive(parse_message(bytes(tx.request)), now)
            elif verb == "send":
                sent = response(int(arg))
                effects = tx.send_response(sent, now)
            else:
                raise AssertionError(f"unknown event {event!r}")

            got = [label(e) for e in effects]
            check(got == labels(expected), "effects", got, labels(expected))
            check(tx.state is state, "state", tx.state, state)
            check(tx.terminated == (state is TERMINATED), "terminated", tx.terminated, state is TERMINATED)
            check(approx(tx.deadline) == approx(deadline), "deadline", tx.deadline, deadline)
            for effect in effects:
                if isinstance(effect, Deliver):
                    check(effect.response is fed, "delivered response", effect.response, fed)
                if isinstance(effect, Transmit):
                    what = label(effect).split(" ", 1)[1]
                    if effect.retransmission:
                        original = first_sent.get(what)
                        check(effect.data == original, "retransmitted bytes", effect.data, original)
                    else:
                        first_sent.setdefault(what, effect.data)
                    if what == request.method:
                        check(effect.data == bytes(request), "request bytes", effect.data, bytes(request))
            if sent is not None:
                want_last = sent if effects else previous_last
                check(tx.last_response is want_last, "last_response", tx.last_response, want_last)
        return errors

    def run_rows(self, tx: ClientTransaction | ServerTransaction, rows: list[tuple], name: str = "") -> None:
        errors = self.check_rows(tx, rows, name)
        if errors:
            self.fail("\n".join(errors))


def install_tables(cls: type, cases: dict, make) -> type:
    """Add one test method per table to ``cls``, so each table passes or fails on its own."""
    for name, (req, reliable, timers, rows) in cases.items():

        def test(self, name=name, req=req, reliable=reliable, timers=timers, rows=rows) -> None:
            self.run_rows(make(req, reliable, timers), rows, name)

        test.__name__ = "test_" + re.sub(r"\W+", "_", name).strip("_")
        test.__doc__ = name
        assert not hasattr(cls, test.__name__), test.__name__
        setattr(cls, test.__name__, test)
    return cls


# --- client transactions (17.1.1, 17.1.2, RFC 6026 7.2) --------------------------------
E_TRYING = [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]  # T1 doubling, capped at T2=4
A_CALLING = [0.5, 1.5, 3.5, 7.5, 15.5, 31.5]  # T1 doubling, no cap
E_FAST = [0.1, 0.3, 0.7] + [1.1 + 0.4 * i for i in range(14)]  # T1=0.1 doubling, capped at T2=0.4, to 6.3
E_T2_IS_T1 = [0.5 * i for i in range(1, 64)]  # T2 = T1 = 0.5: every 500 ms, to 31.5
E_T2_1S = [0.5] + [1.5 + i for i in range(31)]  # T2 = 1: 0.5, 1.5, 2.5 ... 31.5
# T2 lowered to T1 for the first 8 retransmissions (with_t2's default), then doubling to 4 s.
E_T2_FAST_THEN_USUAL = [0.5 * i for i in range(1, 10)] + [5.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]

CLIENT_CASES: dict[str, tuple[Request, bool, TimerSettings, list[tuple]]] = {
    # 17.1.2.2: Timer E doubles up to T2 while Trying; Timer F gives up at 64*T1.
    "non-INVITE UDP: E retransmissions then Timer F": (OPTIONS, UDP, DEFAULT, [
        (0.0, "start", TRYING, "tx OPTIONS", 0.5),
        *ticks(TRYING, "retx OPTIONS", E_TRYING, 32.0),
        (32.0, "timer", TERMINATED, "timeout F, ended", None),
        (33.0, "recv 200", TERMINATED, "", None),  # late response: nothing
    ]),
    # A request's own T2 (TimerSettings.with_t2, a REGISTER's reg_timer_t2): Timer E is
    # capped by it, Timer F still 64*T1.
    "non-INVITE UDP: T2 lowered to T1 for good, E every T1 then Timer F": (OPTIONS, UDP, DEFAULT.with_t2(0.5, 0), [
        (0.0, "start", TRYING, "tx OPTIONS", 0.5),
        *ticks(TRYING, "retx OPTIONS", E_T2_IS_T1, 32.0),
        (32.0, "timer", TERMINATED, "timeout F, ended", None),
    ]),
    "non-INVITE UDP: T2 lowered to 1 s for good": (OPTIONS, UDP, DEFAULT.with_t2(1.0, 0), [
        (0.0, "start", TRYING, "tx OPTIONS", 0.5),
        *ticks(TRYING, "retx OPTIONS", E_T2_1S, 32.0),
        (32.0, "timer", TERMINATED, "timeout F, ended", None),
    ]),
    # with_t2's default: 8 retransmissions at the lowered T2, then doubling up to the usual T2:
    # 18 sends until Timer F instead of 64 when nobody answers.
    "non-INVITE UDP: T2 lowered for 8 retransmissions, then the usual T2": (OPTIONS, UDP, DEFAULT.with_t2(0.5), [
        (0.0, "start", TRYING, "tx OPTIONS", 0.5),
        *ticks(TRYING, "retx OPTIONS", E_T2_FAST_THEN_USUAL, 32.0),
        (32.0, "timer", TERMINATED, "timeout F, ended", None),
    ]),
    "non-INVITE UDP: lowered T2, provisional, Proceeding retransmits every T2": (OPTIONS, UDP, DEFAULT.with_t2(1.0), [
        (0.0, "start", TRYING, "tx OPTIONS", 0.5),
        (0.2, "recv 100", PROCEEDING, "deliver 100", 0.5),
        (0.5, "timer", PROCEEDING, "retx OPTIONS", 1.5),
        (1.5, "timer", PROCEEDING, "retx OPTIONS", 2.5),
        (2.0, "recv 200", COMPLETED, "deliver 200", 7.0),
        (7.0, "timer", TERMINATED, "ended", None),
    ]),
    "non-INVITE TCP: lowered T2, nothing retransmitted": (OPTIONS, TCP, DEFAULT.with_t2(0.5), [
        (0.0, "start", TRYING, "tx OPTIONS", 32.0),
        (32.0, "timer", TERMINATED, "timeout F, ended", None),
    ]),
    # 1xx: Proceeding, passed up (every one of them); Timer E then restarts with T2.
    "non-INVITE UDP: provisional, final, Timer K": (OPTIONS, UDP, DEFAULT, [
        (0.0, "start", TRYING, "tx OPTIONS", 0.5),
        (0.5, "timer", TRYING, "retx OPTIONS", 1.5),
        (1.0, "recv 100", PROCEEDING, "deliver 100", 1.5),
        (1.2, "recv 100", PROCEEDING, "deliver 100", 1.5),  # duplicate 1xx passed up again
        (1.5, "timer", PROCEEDING, "retx OPTIONS", 5.5),  # reset with T2 (Trying would give 3.5)
        (5.5, "timer", PROCEEDING, "retx OPTIONS", 9.5),
        (6.0, "recv 200", COMPLETED, "deliver 200", 11.0),  # E and F stop; K = now + T4
        (7.0, "recv 200", COMPLETED, "", 11.0),  # retransmitted final absorbed
        (8.0, "recv 100", COMPLETED, "", 11.0),
        (11.0, "timer", TERMINATED, "ended", None),
        (12.0, "recv 200", TERMINATED, "", None),
    ]),
    "non-INVITE UDP: final straight from Trying": (OPTIONS, UDP, DEFAULT, [
        (0.0, "start", TRYING, "tx OPTIONS", 0.5),
        (0.3, "recv 404", COMPLETED, "deliver 404", 5.3),
        (5.3, "timer", TERMINATED, "ended", None),
    ]),
    # Reliable transports: no Timer E, Timer K is zero.
    "non-INVITE TCP: final ends at once": (OPTIONS, TCP, DEFAULT, [
        (0.0, "start", TRYING, "tx OPTIONS", 32.0),
        (1.0, "recv 100", PROCEEDING, "deliver 100", 32.0),
        (2.0, "recv 200", TERMINATED, "deliver 200, ended", None),
        (3.0, "recv 200", TERMINATED, "", None),
    ]),
    "non-INVITE TCP: Timer F": (OPTIONS, TCP, DEFAULT, [
        (0.0, "start", TRYING, "tx OPTIONS", 32.0),
        (32.0, "timer", TERMINATED, "timeout F, ended", None),
    ]),
    # 17.1.1.2: Timer A doubles without a cap; Timer B at 64*T1.
    "INVITE UDP: A retransmissions then Timer B": (INVITE, UDP, DEFAULT, [
        (0.0, "start", CALLING, "tx INVITE", 0.5),
        *ticks(CALLING, "retx INVITE", A_CALLING, 32.0),
        (32.0, "timer", TERMINATED, "timeout B, ended", None),
        (40.0, "recv 200", TERMINATED, "", None),
    ]),
    # 1xx stops Timer A. Timer B only applies in Calling (17.1.1.2, figure 5): a
    # Proceeding INVITE waits for its final response with no timer.
    # 2xx -> Accepted with Timer M (RFC 6026 7.2).
    "INVITE UDP: 1xx stops A, 2xx -> Accepted": (INVITE, UDP, DEFAULT, [
        (0.0, "start", CALLING, "tx INVITE", 0.5),
        (0.5, "timer", CALLING, "retx INVITE", 1.5),
        (1.0, "recv 100", PROCEEDING, "deliver 100", None),
        (2.0, "recv 180", PROCEEDING, "deliver 180", None),
        (2.5, "recv 180", PROCEEDING, "deliver 180", None),
        (3.0, "recv 200", ACCEPTED, "deliver 200", 35.0),
        (4.0, "recv 200", ACCEPTED, "deliver 200", 35.0),  # every 2xx goes up for the TU to ACK
        (35.0, "timer", TERMINATED, "ended", None),
        (36.0, "recv 200", TERMINATED, "", None),
    ]),
    "INVITE UDP: Proceeding outlives 64*T1 (Timer B is for Calling only)": (INVITE, UDP, DEFAULT, [
        (0.0, "start", CALLING, "tx INVITE", 0.5),
        (0.2, "recv 180", PROCEEDING, "deliver 180", None),
        (32.0, "timer*", PROCEEDING, "", None),  # still ringing after 32 s
        (60.0, "recv 200", ACCEPTED, "deliver 200", 92.0),
    ]),
    "INVITE UDP: 2xx straight from Calling": (INVITE, UDP, DEFAULT, [
        (0.0, "start", CALLING, "tx INVITE", 0.5),
        (0.7, "recv 200", ACCEPTED, "deliver 200", 32.7),
        (32.7, "timer", TERMINATED, "ended", None),
    ]),
    # 17.1.1.2: 300-699 -> Completed: ACK sent, response passed up, Timer D >= 32 s;
    # retransmitted finals get the same ACK again.
    "INVITE UDP: non-2xx, ACK, Timer D": (INVITE, UDP, DEFAULT, [
        (0.0, "start", CALLING, "tx INVITE", 0.5),
        (0.5, "timer", CALLING, "retx INVITE", 1.5),
        (1.0, "recv 180", PROCEEDING, "deliver 180", None),
        (2.0, "recv 486", COMPLETED, "tx ACK, deliver 486", 34.0),
        (3.0, "recv 486", COMPLETED, "retx ACK", 34.0),
        (4.0, "recv 486", COMPLETED, "retx ACK", 34.0),
        (5.0, "recv 180", COMPLETED, "", 34.0),
        (34.0, "timer", TERMINATED, "ended", None),
        (35.0, "recv 486", TERMINATED, "", None),
    ]),
    "INVITE UDP: non-2xx straight from Calling": (INVITE, UDP, DEFAULT, [
        (0.0, "start", CALLING, "tx INVITE", 0.5),
        (1.0, "recv 503", COMPLETED, "tx ACK, deliver 503", 33.0),
        (2.0, "recv 503", COMPLETED, "retx ACK", 33.0),
        (33.0, "timer", TERMINATED, "ended", None),
    ]),
    "INVITE TCP: non-2xx, ACK, ends at once": (INVITE, TCP, DEFAULT, [
        (0.0, "start", CALLING, "tx INVITE", 32.0),
        (2.0, "recv 486", TERMINATED, "tx ACK, deliver 486, ended", None),
        (3.0, "recv 486", TERMINATED, "", None),
    ]),
    "INVITE TCP: 2xx -> Accepted, Timer M": (INVITE, TCP, DEFAULT, [
        (0.0, "start", CALLING, "tx INVITE", 32.0),
        (2.0, "recv 200", ACCEPTED, "deliver 200", 34.0),
        (3.0, "recv 200", ACCEPTED, "deliver 200", 34.0),
        (34.0, "timer", TERMINATED, "ended", None),
    ]),
    "INVITE TCP: Timer B": (INVITE, TCP, DEFAULT, [
        (0.0, "start", CALLING, "tx INVITE", 32.0),
        (32.0, "timer", TERMINATED, "timeout B, ended", None),
    ]),
    # Several timers due at once fire earliest first, each re-armed from its own due time.
    "non-INVITE UDP: catching up on E then F": (OPTIONS, UDP, DEFAULT, [
        (0.0, "start", TRYING, "tx OPTIONS", 0.5),
        (4.0, "timer*", TRYING, times("retx OPTIONS", 3), 7.5),  # 0.5, 1.5, 3.5
        (40.0, "timer*", TERMINATED, times("retx OPTIONS", 7) + ", timeout F, ended", None),
    ]),
    "INVITE UDP: catching up on A then B": (INVITE, UDP, DEFAULT, [
        (0.0, "start", CALLING, "tx INVITE", 0.5),
        (100.0, "timer*", TERMINATED, times("retx INVITE", 6) + ", timeout B, ended", None),
    ]),
    "INVITE UDP: timer calls before anything is due": (INVITE, UDP, DEFAULT, [
        (0.0, "timer*", None, "", None),  # not started: nothing armed
        (0.0, "start", CALLING, "tx INVITE", 0.5),
        (0.49, "timer*", CALLING, "", 0.5),
    ]),
    # Configurable T1/T2/T4 change every interval.
    "FAST non-INVITE UDP: E, K": (OPTIONS, UDP, FAST, [
        (0.0, "start", TRYING, "tx OPTIONS", 0.1),
        *ticks(TRYING, "retx OPTIONS", [0.1, 0.3, 0.7, 1.1, 1.5], 1.9),
        (1.6, "recv 180", PROCEEDING, "deliver 180", 1.9),
        (1.9, "timer", PROCEEDING, "retx OPTIONS", 2.3),
        (2.0, "recv 200", COMPLETED, "deliver 200", 3.0),  # K = T4 = 1.0
        (3.0, "timer", TERMINATED, "ended", None),
    ]),
    "FAST non-INVITE UDP: Timer F at 64*T1": (OPTIONS, UDP, FAST, [
        (0.0, "start", TRYING, "tx OPTIONS", 0.1),
        *ticks(TRYING, "retx OPTIONS", E_FAST, 6.4),
        (6.4, "timer", TERMINATED, "timeout F, ended", None),
    ]),
    "FAST INVITE UDP: A, B": (INVITE, UDP, FAST, [
        (0.0, "start", CALLING, "tx INVITE", 0.1),
        *ticks(CALLING, "retx INVITE", [0.1, 0.3, 0.7, 1.5, 3.1, 6.3], 6.4),
        (6.4, "timer", TERMINATED, "timeout B, ended", None),
    ]),
    "FAST INVITE UDP: Timer M = 64*T1": (INVITE, UDP, FAST, [
        (0.0, "start", CALLING, "tx INVITE", 0.1),
        (0.05, "recv 200", ACCEPTED, "deliver 200", 6.45),
        (6.45, "timer", TERMINATED, "ended", None),
    ]),
    "FAST INVITE UDP: Timer D stays 32": (INVITE, UDP, FAST, [
        (0.0, "start", CALLING, "tx INVITE", 0.1),
        (1.0, "recv 603", COMPLETED, "tx ACK, deliver 603", 33.0),
    ]),
    "SLOW INVITE UDP: Timer D = 64*T1 when that is longer": (INVITE, UDP, SLOW, [
        (0.0, "start", CALLING, "tx INVITE", 1.0),
        (1.0, "recv 404", COMPLETED, "tx ACK, deliver 404", 65.0),
    ]),
}


class ClientTransactionTests(TransactionTableMixin, SynchronousTestCase):
    def test_every_non_2xx_final_is_acknowledged(self) -> None:
        """17.1.1.2: every 300-699 response gets the ACK, Completed and Timer D."""
        errors = []
        for status in (300, 302, 400, 404, 486, 500, 503, 600, 603, 699):
            errors += self.check_rows(ClientTransaction(INVITE, UDP), [
                (0.0, "start", CALLING, "tx INVITE", 0.5),
                (1.0, f"recv {status}", COMPLETED, f"tx ACK, deliver {status}", 33.0),
                (2.0, f"recv {status}", COMPLETED, "retx ACK", 33.0),
            ], str(status))
        if errors:
            self.fail("\n".join(errors))

    def test_ack_for_non_2xx(self) -> None:
        """17.1.1.3: the ACK the transaction sends, and make_ack itself."""
        response = make_response(INVITE, 486, to_tag="xyz")
        tx = ClientTransaction(INVITE, UDP)
        tx.start(0.0)
        transmit = tx.receive(response, 1.0)[0]
        self.assertIsInstance(transmit, Transmit)
        self.assertFalse(transmit.retransmission)
        for ack in (parse_message(transmit.data), make_ack(INVITE, response)):
            self.assertIsInstance(ack, Request)
            self.assertEqual(ack.method, "ACK")
            self.assertEqual(str(ack.uri), str(INVITE.uri))
            self.assertEqual(ack.call_id, INVITE.call_id)
            self.assertEqual(ack.headers.get_all("From"), INVITE.headers.get_all("From"))
            self.assertEqual((ack.cseq.number, ack.cseq.method), (INVITE.cseq.number, "ACK"))
            self.assertEqual(ack.headers.get_all("To"), response.headers.get_all("To"))
            self.assertEqual(ack.to.tag, "xyz")
            self.assertEqual(ack.via, [INVITE.top_via])  # exactly one Via, the request's top one
            self.assertEqual(ack.top_via.branch, "z9hG4bK776asdhds")
            self.assertEqual(ack.headers.get_all("Route"), list(ROUTES))
            self.assertEqual(ack.body, b"")
        # A retransmitted final gets exactly the same ACK bytes.
        self.assertEqual(tx.receive(response, 2.0), [Transmit(transmit.data, retransmission=True)])

    def test_ack_without_route(self) -> None:
        ack = make_ack(OPTIONS, make_response(OPTIONS, 404, to_tag="t"))
        self.assertEqual(ack.headers.get_all("Route"), [])
        self.assertEqual((ack.cseq.number, ack.top_via.branch), (1, "z9hG4bKopt1"))

    def test_with_t2_replaces_t2_only_never_below_t1(self) -> None:
        self.assertEqual(SLOW.with_t2(2.0, 0), TimerSettings(t1=1.0, t2=2.0, t4=5.0))
        self.assertEqual(SLOW.with_t2(8.0, 0), TimerSettings(t1=1.0, t2=8.0, t4=5.0))
        self.assertEqual(SLOW.with_t2(0.25, 0), TimerSettings(t1=1.0, t2=1.0, t4=5.0))
        self.assertEqual(SLOW.with_t2(0.25), TimerSettings(t1=1.0, t2=1.0, t4=5.0, fast_resends=8, t2_after=4.0))
        self.assertEqual(SLOW.with_t2(0.25).timeout, SLOW.timeout)

    def test_lowered_t2_leaves_invite_timer_a_alone(self) -> None:
        """Timer A doubles without a T2 cap (17.1.1.2): a lowered T2 changes nothing there."""
        errors = self.check_rows(ClientTransaction(INVITE, UDP, DEFAULT.with_t2(0.5)), [
            (0.0, "start", CALLING, "tx INVITE", 0.5),
            *ticks(CALLING, "retx INVITE", A_CALLING, 32.0),
            (32.0, "timer", TERMINATED, "timeout B, ended", None),
        ], "INVITE")
        if errors:
            self.fail("\n".join(errors))

    def test_key(self) -> None:
        self.assertEqual(ClientTransaction(INVITE, UDP).key, ("z9hG4bK776asdhds", "INVITE"))
        self.assertEqual(ClientTransaction(OPTIONS, UDP).key, ("z9hG4bKopt1", "OPTIONS"))


install_tables(ClientTransactionTests, CLIENT_CASES, ClientTransaction)


# --- server transactions (17.2.1, 17.2.2, RFC 6026 7.1) --------------------------------
G_COMPLETED = [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]  # T1 doubling, capped at T2

SERVER_CASES: dict[str, tuple[Request, bool, TimerSettings, list[tuple]]] = {
    # 17.2.2: Trying absorbs retransmissions; Proceeding resends the last 1xx;
    # Completed resends the final and ignores further TU responses; Timer J.
    "non-INVITE UDP: Trying, Proceeding, Completed, J": (OPTIONS, UDP, DEFAULT, [
        (0.0, "-", TRYING, "", None),
        (0.5, "recv OPTIONS", TRYING, "", None),
        (1.0, "send 100", PROCEEDING, "tx 100", None),
        (1.5, "recv OPTIONS", PROCEEDING, "retx 100", None),
        (1.6, "send 180", PROCEEDING, "tx 180", None),
        (1.7, "recv OPTIONS", PROCEEDING, "retx 180", None),  # the most recent provisional
        (2.0, "send 200", COMPLETED, "tx 200", 34.0),  # J = now + 64*T1
        (3.0, "recv OPTIONS", COMPLETED, "retx 200", 34.0),
        (4.0, "send 500", COMPLETED, "", 34.0),
        (4.5, "send 180", COMPLETED, "", 34.0),
        (5.0, "recv OPTIONS", COMPLETED, "retx 200", 34.0),
        (34.0, "timer", TERMINATED, "ended", None),
        (35.0, "recv OPTIONS", TERMINATED, "", None),
        (35.0, "send 200", TERMINATED, "", None),
    ]),
    "non-INVITE UDP: final straight from Trying": (OPTIONS, UDP, DEFAULT, [
        (0.0, "-", TRYING, "", None),
        (1.0, "send 404", COMPLETED, "tx 404", 33.0),
        (33.0, "timer", TERMINATED, "ended", None),
    ]),
    "non-INVITE TCP: final ends at once": (OPTIONS, TCP, DEFAULT, [
        (0.0, "-", TRYING, "", None),
        (1.0, "send 100", PROCEEDING, "tx 100", None),
        (2.0, "send 200", TERMINATED, "tx 200, ended", None),
        (3.0, "recv OPTIONS", TERMINATED, "", None),
        (3.0, "send 200", TERMINATED, "", None),
    ]),
    # 17.2.1: Timer G from T1 doubling up to T2; Timer H at 64*T1 gives up.
    "INVITE UDP: G retransmissions then Timer H": (INVITE, UDP, DEFAULT, [
        (0.0, "-", PROCEEDING, "", None),
        (0.0, "send 486", COMPLETED, "tx 486", 0.5),
        *ticks(COMPLETED, "retx 486", G_COMPLETED, 32.0),
        (32.0, "timer", TERMINATED, "timeout H, ended", None),
        (33.0, "recv ACK", TERMINATED, "", None),
    ]),
    "INVITE UDP: 1xx, non-2xx, ACK -> Confirmed, Timer I": (INVITE, UDP, DEFAULT, [
        (0.0, "-", PROCEEDING, "", None),
        (0.1, "recv INVITE", PROCEEDING, "", None),  # no provisional to resend yet
        (0.2, "send 100", PROCEEDING, "tx 100", None),
        (0.3, "send 180", PROCEEDING, "tx 180", None),
        (0.4, "recv INVITE", PROCEEDING, "retx 180", None),
        (1.0, "send 486", COMPLETED, "tx 486", 1.5),
        (1.2, "recv INVITE", COMPLETED, "retx 486", 1.5),
        (1.5, "timer", COMPLETED, "retx 486", 2.5),
        (1.8, "send 500", COMPLETED, "", 2.5),
        (1.9, "send 200", COMPLETED, "", 2.5),
        (2.0, "recv ACK", CONFIRMED, "", 7.0),  # G and H stop; I = now + T4
        (3.0, "recv ACK", CONFIRMED, "", 7.0),
        (4.0, "recv INVITE", CONFIRMED, "", 7.0),
        (7.0, "timer", TERMINATED, "ended", None),
        (8.0, "recv ACK", TERMINATED, "", None),
    ]),
    "INVITE TCP: no G; ACK ends at once": (INVITE, TCP, DEFAULT, [
        (0.0, "-", PROCEEDING, "", None),
        (1.0, "send 486", COMPLETED, "tx 486", 33.0),
        (1.5, "recv INVITE", COMPLETED, "retx 486", 33.0),
        (2.0, "recv ACK", TERMINATED, "ended", None),
    ]),
    "INVITE TCP: Timer H": (INVITE, TCP, DEFAULT, [
        (1.0, "send 486", COMPLETED, "tx 486", 33.0),
        (33.0, "timer", TERMINATED, "timeout H, ended", None),
    ]),
    # RFC 6026 7.1: 2xx -> Accepted, Timer L; INVITE retransmissions absorbed;
    # further 2xx from the TU sent; anything else refused.
    "INVITE UDP: 2xx -> Accepted, Timer L": (INVITE, UDP, DEFAULT, [
        (0.0, "-", PROCEEDING, "", None),
        (0.2, "send 180", PROCEEDING, "tx 180", None),
        (1.0, "send 200", ACCEPTED, "tx 200", 33.0),
        (1.5, "recv INVITE", ACCEPTED, "", 33.0),
        (2.0, "send 200", ACCEPTED, "tx 200", 33.0),  # L is not restarted
        (2.5, "send 486", ACCEPTED, "", 33.0),
        (2.6, "send 180", ACCEPTED, "", 33.0),
        (3.0, "recv INVITE", ACCEPTED, "", 33.0),
        (33.0, "timer", TERMINATED, "ended", None),
        (34.0, "recv INVITE", TERMINATED, "", None),
        (34.0, "send 200", TERMINATED, "", None),
    ]),
    "INVITE TCP: 2xx -> Accepted, Timer L": (INVITE, TCP, DEFAULT, [
        (1.0, "send 200", ACCEPTED, "tx 200", 33.0),
        (33.0, "timer", TERMINATED, "ended", None),
    ]),
    "INVITE UDP: catching up on G then H": (INVITE, UDP, DEFAULT, [
        (0.0, "send 486", COMPLETED, "tx 486", 0.5),
        (8.0, "timer*", COMPLETED, times("retx 486", 4), 11.5),  # 0.5, 1.5, 3.5, 7.5
        (100.0, "timer*", TERMINATED, times("retx 486", 6) + ", timeout H, ended", None),
    ]),
    # Configurable T1/T2/T4.
    "FAST INVITE UDP: G, ACK, I": (INVITE, UDP, FAST, [
        (0.0, "send 486", COMPLETED, "tx 486", 0.1),
        *ticks(COMPLETED, "retx 486", [0.1, 0.3, 0.7, 1.1, 1.5], 1.9),
        (1.6, "recv ACK", CONFIRMED, "", 2.6),  # I = T4 = 1.0
        (2.6, "timer", TERMINATED, "ended", None),
    ]),
    "FAST INVITE UDP: Timer H at 64*T1": (INVITE, UDP, FAST, [
        (0.0, "send 486", COMPLETED, "tx 486", 0.1),
        *ticks(COMPLETED, "retx 486", E_FAST, 6.4),
        (6.4, "timer", TERMINATED, "timeout H, ended", None),
    ]),
    "FAST INVITE UDP: Timer L": (INVITE, UDP, FAST, [
        (1.0, "send 200", ACCEPTED, "tx 200", 7.4),
        (7.4, "timer", TERMINATED, "ended", None),
    ]),
    "FAST non-INVITE UDP: Timer J": (OPTIONS, UDP, FAST, [
        (1.0, "send 200", COMPLETED, "tx 200", 7.4),
        (7.4, "timer", TERMINATED, "ended", None),
    ]),
}


class ServerTransactionTests(TransactionTableMixin, SynchronousTestCase):
    def test_key(self) -> None:
        self.assertEqual(ServerTransaction(INVITE, UDP).key, server_key(INVITE))

    def test_key_kept_when_the_requests_views_are_dropped(self) -> None:
        """Made once: the stack drops an answered request's parsed views, and the key is
        read again when the transaction ends (no Via parsed again for it)."""
        request = parse_message(bytes(INVITE))
        transaction = ServerTransaction(request, UDP)
        request.headers.drop_views()
        self.assertIs(transaction.key, transaction.key)
        self.assertEqual(transaction.key, server_key(INVITE))
        self.assertFalse(request.headers.has_view(TOP_VIA_VIEW))
        given = ("3261", "z9hG4bKgiven", "host", 5060, "INVITE")
        self.assertIs(ServerTransaction(request, UDP, key=given).key, given)


    def test_released_response_still_answers_retransmissions(self) -> None:
        """release_response() lets the Response go; its bytes are resent (17.2.1 Timer G,
        a retransmitted INVITE) and its status answers ``answered``."""
        transaction = ServerTransaction(INVITE, UDP)
        self.assertEqual((transaction.last_status, transaction.answered), (None, False))
        busy = make_response(INVITE, 486, to_tag="t1")
        [sent] = transaction.send_response(busy, 0.0)
        transaction.release_response()
        self.assertEqual((transaction.last_response, transaction.last_status, transaction.answered),
                         (None, 486, True))
        [again] = transaction.receive(INVITE, 0.1)
        self.assertEqual((again.data, again.retransmission), (sent.data, True))
        [timer_g] = transaction.handle_timer(0.5)  # T1
        self.assertEqual(timer_g.data, sent.data)


install_tables(ServerTransactionTests, SERVER_CASES, ServerTransaction)


# --- transport errors (17.1.4, 17.2.4) -------------------------------------------------
# (transaction class, request, reliable, setup events at t=0.1, 0.2, ..., the state they reach)
TRANSPORT_ERROR_SETUPS = [
    (ClientTransaction, OPTIONS, UDP, ["start"], TRYING),
    (ClientTransaction, OPTIONS, UDP, ["start", "recv 100"], PROCEEDING),
    (ClientTransaction, OPTIONS, UDP, ["start", "recv 200"], COMPLETED),
    (ClientTransaction, OPTIONS, TCP, ["start", "recv 100"], PROCEEDING),
    (ClientTransaction, INVITE, UDP, ["start"], CALLING),
    (ClientTransaction, INVITE, UDP, ["start", "recv 180"], PROCEEDING),
    (ClientTransaction, INVITE, UDP, ["start", "recv 200"], ACCEPTED),
    (ClientTransaction, INVITE, UDP, ["start", "recv 486"], COMPLETED),
    (ClientTransaction, INVITE, TCP, ["start", "recv 200"], ACCEPTED),
    (ServerTransaction, OPTIONS, UDP, [], TRYING),
    (ServerTransaction, OPTIONS, UDP, ["send 100"], PROCEEDING),
    (ServerTransaction, OPTIONS, UDP, ["send 200"], COMPLETED),
    (ServerTransaction, INVITE, UDP, [], PROCEEDING),
    (ServerTransaction, INVITE, UDP, ["send 180"], PROCEEDING),
    (ServerTransaction, INVITE, UDP, ["send 486"], COMPLETED),
    (ServerTransaction, INVITE, UDP, ["send 486", "recv ACK"], CONFIRMED),
    (ServerTransaction, INVITE, UDP, ["send 200"], ACCEPTED),
    (ServerTransaction, INVITE, TCP, ["send 486"], COMPLETED),
    (ServerTransaction, INVITE, TCP, ["send 200"], ACCEPTED),
]


class TransportErrorTests(TransactionTableMixin, SynchronousTestCase):
    def test_transport_failure_ends_every_live_state(self) -> None:
        errors = []
        for cls, req, reliable, events, state in TRANSPORT_ERROR_SETUPS:
            name = f"{cls.__name__} {req.method} {'TCP' if reliable else 'UDP'} {state.name}"
            tx = cls(req, reliable, DEFAULT)
            # The setup rows only check the state reached; "fail" then ends it wherever it is.
            setup = [(0.1 * (i + 1), event) for i, event in enumerate(events)]
            self.replay(tx, setup)
            if tx.state is not state:
                errors.append(f"{name}: setup reached {tx.state}")
                continue
            errors += self.check_rows(tx, [
                (5.0, "fail", TERMINATED, "transport failed, ended", None),
                (6.0, "fail", TERMINATED, "", None),
                (7.0, "timer*", TERMINATED, "", None),
            ], name)
        if errors:
            self.fail("\n".join(errors))

    def replay(self, tx, setup: list[tuple[float, str]]) -> None:
        for now, event in setup:
            verb, _, arg = event.partition(" ")
            if event == "start":
                tx.start(now)
            elif event == "recv ACK":
                tx.receive(make_ack(tx.request, tx.last_response), now)
            elif verb == "recv":
                tx.receive(make_response(tx.request, int(arg), to_tag="t"), now)
            else:
                tx.send_response(make_response(tx.request, int(arg), to_tag="t"), now)


# --- matching (17.1.3, 17.2.3) ---------------------------------------------------------
CANCEL = request("CANCEL")  # same branch as the INVITE, as 9.1 requires
OTHER_BRANCH_INVITE = request("INVITE", branch="z9hG4bKother")
INV_2543 = rfc4475("inv2543")  # no branch at all
BADBRANCH = rfc4475("badbranch")  # branch=z9hG4bK: the bare cookie (RFC 4475 3.3.x)


def resend(message: Request) -> Request:
    """A retransmission: the same bytes parsed again."""
    return parse_message(bytes(message))


def edited(message: Request, old: bytes, new: bytes) -> Request:
    data = bytes(message)
    assert old in data, old
    return parse_message(data.replace(old, new))


# (request the client transaction sent, response received, does it match?)
CLIENT_MATCHES = [
    *[(INVITE, make_response(INVITE, status, to_tag="t"), True) for status in (100, 180, 200, 486)],
    (OPTIONS, make_response(OPTIONS, 200), True),
    (INVITE, make_response(CANCEL, 200, to_tag="t"), False),  # same branch, CSeq method CANCEL
    (CANCEL, make_response(CANCEL, 200, to_tag="t"), True),
    (CANCEL, make_response(INVITE, 487, to_tag="t"), False),
    (INVITE, make_response(OTHER_BRANCH_INVITE, 200, to_tag="t"), False),
    (OPTIONS, make_response(INVITE, 200, to_tag="t"), False),
]

# (what, request that created the server transaction, later request, same transaction?)
SERVER_MATCHES = [
    ("retransmission", INVITE, resend(INVITE), True),
    ("sent-by host differs", INVITE, request("INVITE", sent_by="pc34.atlanta.example.com:5060"), False),
    ("sent-by port differs", INVITE, request("INVITE", sent_by="pc33.atlanta.example.com:5070"), False),
    ("sent-by host case", INVITE, request("INVITE", sent_by="PC33.Atlanta.example.com:5060"), True),
    ("branch differs", INVITE, OTHER_BRANCH_INVITE, False),
    ("ACK for non-2xx", INVITE, make_ack(INVITE, make_response(INVITE, 486, to_tag="t")), True),
    ("ACK for 2xx (new branch)", INVITE, make_ack(OTHER_BRANCH_INVITE, make_response(INVITE, 200)), False),
    ("CANCEL", INVITE, CANCEL, False),
    ("OPTIONS retransmission", OPTIONS, resend(OPTIONS), True),
    ("2543 retransmission", INV_2543, resend(INV_2543), True),
    ("2543 ACK for non-2xx", INV_2543, make_ack(INV_2543, make_response(INV_2543, 486, to_tag="t")), True),
    ("2543 CSeq differs", INV_2543, edited(INV_2543, b"CSeq: 56 INVITE", b"CSeq: 57 INVITE"), False),
    ("2543 Call-ID differs", INV_2543, edited(INV_2543, b"Call-ID: inv2543.", b"Call-ID: other."), False),
    ("2543 CANCEL", INV_2543, edited(INV_2543, b"INVITE", b"CANCEL"), False),
    ("bare cookie retransmission", BADBRANCH, resend(BADBRANCH), True),
    ("bare cookie CSeq differs", BADBRANCH, edited(BADBRANCH, b"CSeq: 8 OPTIONS", b"CSeq: 9 OPTIONS"), False),
    # The bare cookie identifies nothing: another request carrying it is another transaction.
    ("bare cookie, other Call-ID", BADBRANCH, edited(BADBRANCH, b"Call-ID: badbranch.", b"Call-ID: x."), False),
]


class MatchingTests(SynchronousTestCase):
    def assertTable(self, rows: list[tuple[str, bool, bool]]) -> None:
        wrong = [f"{what}: got {got}, want {want}" for what, got, want in rows if got != want]
        if wrong:
            self.fail("\n".join(wrong))

    def test_client_matching(self) -> None:
        """17.1.3: top Via branch and CSeq method."""
        self.assertTable([
            (f"{sent.method} vs {response.status} ({response.cseq.method})",
             client_key_for_response(response) == client_key_for_request(sent), matches)
            for sent, response, matches in CLIENT_MATCHES
        ])

    def test_response_without_branch_has_no_key(self) -> None:
        self.assertIsNone(client_key_for_response(make_response(INV_2543, 200, to_tag="t")))

    def test_server_matching(self) -> None:
        """17.2.3: branch, sent-by and method (ACK -> INVITE), or the RFC 2543 fallback."""
        self.assertTable([
            (what, server_key(later) == server_key(first), matches)
            for what, first, later, matches in SERVER_MATCHES
        ])

    def test_server_key_kind(self) -> None:
        """Magic-cookie branches use the branch rule; the rest the RFC 2543 fallback."""
        self.assertTable([
            (str(req.uri), server_key(req)[0], kind)
            for req, kind in [(INVITE, "3261"), (OPTIONS, "3261"), (INV_2543, "2543"), (BADBRANCH, "2543")]
        ])

    def test_rfc2543_to_tag(self) -> None:
        """17.2.3: for RFC 2543 requests the To tag is part of the match; server_key leaves it
        out (on purpose, so that the ACK finds its INVITE), so two requests that differ only
        in their To tag share a key."""
        to = b"To: sip:+16505552222@ss1.example.net;user=phone"
        first = edited(INV_2543, to, to + b";tag=a")
        self.assertNotEqual(server_key(first), server_key(edited(INV_2543, to, to + b";tag=b")))

    test_rfc2543_to_tag.todo = "server_key ignores the To tag for RFC 2543 requests (documented trade-off)"


class AbandonTests(SynchronousTestCase):
    """The TU's own timeout for a final response (Kamailio's fr_timer), before Timer B/F."""

    def test_pending_transaction_ends_at_once(self) -> None:
        for method in ("OPTIONS", "INVITE"):
            transaction = ClientTransaction(request(method), reliable=False)
            transaction.start(0.0)
            effects = transaction.abandon(2.0, 2.0)
            self.assertEqual(effects, [TimedOut("fr", 2.0), Ended()], method)
            self.assertIs(transaction.state, TERMINATED)
            self.assertIsNone(transaction.deadline, "no retransmissions, no Timer B/F")
            self.assertEqual(transaction.receive(make_response(request(method), 200), 3.0), [],
                             "a late response changes nothing")

    def test_proceeding_transaction_ends_too(self) -> None:
        transaction = ClientTransaction(request("OPTIONS"), reliable=False)
        transaction.start(0.0)
        transaction.receive(make_response(request("OPTIONS"), 100), 0.1)
        self.assertEqual(transaction.abandon(1.0, 1.0), [TimedOut("fr", 1.0), Ended()])

    def test_nothing_after_a_final_response(self) -> None:
        transaction = ClientTransaction(request("OPTIONS"), reliable=False)
        transaction.start(0.0)
        transaction.receive(make_response(request("OPTIONS"), 200), 0.1)
        self.assertEqual(transaction.abandon(1.0, 1.0), [])
        self.assertIs(transaction.state, COMPLETED, "Timer K still absorbs retransmissions")
        invite = ClientTransaction(request("INVITE"), reliable=False)
        invite.start(0.0)
        invite.receive(make_response(request("INVITE"), 200), 0.1)
        self.assertEqual(invite.abandon(1.0, 1.0), [])
        self.assertIs(invite.state, ACCEPTED)
