"""txuac.registrant.health: re-registration when a connection drops, OPTIONS pings with hysteresis.

The registrant runs as in tests/registrant/test_service.py (task.Clock, fake stack and
store: tests/support/registrant_harness.py's ServiceTestCase); the fake stack here also says where each response came
from and takes connection-lost observers, as SIPStack does.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from tests.support.accounts import make_row
from tests.support.registrant_harness import TICK, FakeStack, ServiceTestCase
from txuac.errors import TransactionTimeout, TransportError
from txuac.net.interfaces import ResponseOrigin
from txuac.registrant.health import RECOVERY_SPACING, FlowTracker, Reachability, State, options_request
from txuac.registrant.record import Flag
from txuac.registrant.record import State as RecordState
from txuac.sip import make_response, parse_message
from txuac.sip.via import Address

PROXY = Address("tcp", "198.51.100.20", 5070)
OTHER = Address("tcp", "198.51.100.30", 5070)
TCP_PROXY = "sip:198.51.100.20:5070;transport=tcp"


class RecordingPool:
    def __init__(self):
        self.intervals: dict[Address, float | None] = {}

    def set_keepalive_interval(self, address, seconds):
        self.intervals[address] = seconds


class FlowStack(FakeStack):
    """FakeStack that says where each response came from (``source``: the handle's origin, as
    SIPStack's ClientRequest does), with lost-connection observers."""

    def __init__(self, clock):
        super().__init__(clock)
        self.source: Address | None = None
        self.observers: list = []
        self.pool = RecordingPool()

    def add_connection_lost_observer(self, observer):
        self.observers.append(observer)

    def remove_connection_lost_observer(self, observer):
        self.observers.remove(observer)

    def set_keepalive_interval(self, peer, seconds):
        self.pool.set_keepalive_interval(peer, seconds)

    def lose(self, peer: Address) -> None:
        for observer in list(self.observers):
            observer(peer)

    def answer(self, sent, status, *headers, reason=None):
        response = parse_message(bytes(make_response(sent.request, status, reason, to_tag="reg-tag",
                                                     extra_headers=list(headers))))
        if self.source is not None:
            sent.handle.origin = ResponseOrigin(self.source, self.source)
        sent.deferred.callback(response)


class HealthTestCase(ServiceTestCase):
    stack_class = FlowStack

    def registers(self, pending=True):
        sent = self.stack.pending() if pending else self.stack.sent
        return [s for s in sent if s.request.method == "REGISTER"]

    def pings(self, pending=True):
        sent = self.stack.pending() if pending else self.stack.sent
        return [s for s in sent if s.request.method == "OPTIONS"]

    def online(self, source: Address | None, expires=3600):
        """Answer every pending REGISTER with a 200 from ``source``."""
        self.stack.source = source
        for sent in self.registers():
            self.stack.ok(sent, expires)


# ------------------------------------------------------------------------------------------
class ReachabilityTests(SynchronousTestCase):
    def test_unknown_goes_up_on_the_first_answer(self):
        health = Reachability(up_count=2, down_count=3)
        self.assertIs(health.success(1.0), State.UP)
        self.assertEqual(health.changed_at, 1.0)
        self.assertIsNone(health.success(2.0))

    def test_down_after_down_count_failures_in_a_row(self):
        health = Reachability(up_count=2, down_count=3)
        health.success(0)
        self.assertIsNone(health.failure(1, "timeout"))
        self.assertIsNone(health.failure(2, "timeout"))
        self.assertIsNone(health.success(3), "an answer starts the count again")
        self.assertIsNone(health.failure(4, "timeout"))
        self.assertIsNone(health.failure(5, "timeout"))
        self.assertIs(health.failure(6, "refused"), State.DOWN)
        self.assertEqual(health.last_error, "refused")
        self.assertIsNone(health.failure(7, "timeout"))

    def test_unknown_goes_down_after_down_count_failures(self):
        health = Reachability(up_count=2, down_count=2)
        self.assertIsNone(health.failure(1, "timeout"))
        self.assertIs(health.failure(2, "timeout"), State.DOWN)

    def test_up_after_up_count_answers_in_a_row(self):
        health = Reachability(up_count=2, down_count=1)
        health.failure(0, "timeout")
        self.assertIsNone(health.success(1))
        self.assertIsNone(health.failure(2, "timeout"))
        self.assertIsNone(health.success(3))
        self.assertIs(health.success(4), State.UP)


class OptionsRequestTests(SynchronousTestCase):
    def test_to_an_address_and_a_uri(self):
        request = options_request(PROXY, "192.0.2.10:5060", "txuac/1")
        self.assertEqual(str(request.uri), "sip:198.51.100.20:5070;transport=tcp")
        self.assertEqual(request.method, "OPTIONS")
        self.assertEqual(request.headers.get("User-Agent"), "txuac/1")
        parse_message(bytes(request))
        request = options_request(Address("udp", "2001:db8::1", 5060), "192.0.2.10")
        self.assertEqual(str(request.uri), "sip:[2001:db8::1]:5060")


# ------------------------------------------------------------------------------------------
class ConnectionLostTests(HealthTestCase):
    def rows(self):
        return [make_row("acc1", auth_proxy=TCP_PROXY), make_row("acc2", auth_proxy=TCP_PROXY),
                make_row("udp1", auth_proxy="sip:198.51.100.20:5070")]

    def test_observer_added_at_start_and_removed_at_stop(self):
        self.start(self.rows())
        self.assertEqual(self.stack.observers, [self.service.flows.connection_lost])
        self.online(PROXY)
        self.successResultOf(self.service.stopService())
        self.assertEqual(self.stack.observers, [])

    def test_accounts_of_the_lost_connection_register_at_once(self):
        self.start(self.rows())
        self.stack.source = PROXY
        for sent in self.registers():
            self.stack.ok(sent, 3600)
        # The UDP account's answer came over UDP: it has no connection to lose.
        self.assertEqual(self.service.flows.accounts_on(PROXY), ["acc1", "acc2", "udp1"])
        self.service.flows.learned("udp1", Address("udp", "198.51.100.20", 5070))
        self.assertEqual(self.service.flows.accounts_on(PROXY), ["acc1", "acc2"])
        self.advance(60)
        self.assertEqual(self.registers(), [])
        self.stack.lose(OTHER)
        self.advance(TICK)
        self.assertEqual(self.registers(), [], "another connection: nothing to do")
        self.stack.lose(PROXY)
        self.advance(TICK)
        self.assertEqual(sorted(s.contact_user for s in self.registers()), ["acc1", "acc2"])

    def test_without_the_hook_the_account_waits_for_its_refresh(self):
        """What the hook changes: the same drop with nothing tracked sends nothing."""
        self.start(self.rows())
        self.online(source=None)
        self.stack.lose(PROXY)
        self.advance(60)
        self.assertEqual(self.registers(), [])

    def test_refresh_failing_with_the_connection_is_retried_at_once(self):
        """The stack fails the transactions on a lost connection before telling observers:
        the account whose refresh was in flight goes again at once, not after its retry."""
        self.start(self.rows()[:1], reg_retry_interval=60)
        self.online(PROXY, expires=120)
        self.advance(120)
        [refresh] = self.registers()
        refresh.deferred.errback(TransportError("REGISTER: connection lost"))
        self.assertEqual(self.record().state(self.now()), RecordState.FAILED)
        self.stack.lose(PROXY)
        self.advance(TICK)
        self.assertEqual(len(self.registers()), 1)

    def test_drops_in_a_row_are_spaced(self):
        self.start(self.rows()[:1])
        self.online(PROXY)
        self.stack.lose(PROXY)
        self.advance(TICK)
        self.online(PROXY)
        start = self.now()
        self.stack.lose(PROXY)
        self.advance(RECOVERY_SPACING - 1)
        self.assertEqual(self.registers(), [])
        self.advance(1 + TICK)
        [again] = self.registers()
        self.assertGreaterEqual(again.at - start, RECOVERY_SPACING - 2 * TICK)

    def test_disabled_and_registering_accounts_are_left_alone(self):
        self.start(self.rows()[:2])
        self.online(PROXY)
        self.service.disable("l_uuid", "acc2")
        self.service.send_register("l_uuid", "acc1")
        self.assertEqual(len(self.registers()), 1)
        self.stack.lose(PROXY)
        self.advance(1)
        self.assertEqual(len(self.registers()), 1, "acc1 was already registering, acc2 is disabled")
        self.assertEqual(len(self.stack.sent), 3)

    def test_removed_account_is_forgotten(self):
        self.start(self.rows()[:1])
        self.online(PROXY)
        self.service.remove("acc1")
        self.assertEqual(self.service.flows.accounts_on(PROXY), [])

    def test_flow_timer_sets_the_keepalive_interval_of_the_flow(self):
        tracker = FlowTracker(registrant=None, stack=FlowStack(None))
        tracker.learned("acc1", PROXY, flow_timer=60)
        self.assertEqual(tracker.stack.pool.intervals, {PROXY: 60})
        tracker.learned("acc1", Address("udp", "198.51.100.20", 5070), flow_timer=60)
        self.assertEqual(tracker.stack.pool.intervals, {PROXY: 60}, "UDP: no flow to keep alive")
        self.assertIsNone(tracker.peer_of("acc1"))


# ------------------------------------------------------------------------------------------
INTERVAL = 5


class OptionsPingTests(HealthTestCase):
    def rows(self):
        return [make_row("acc1"), make_row("acc2"), make_row("plain"),
                make_row("other", auth_proxy="sip:other.example:5060")]

    def start_pinging(self, **settings):
        settings.setdefault("reg_options_ping_interval", INTERVAL)
        self.start(self.rows(), **settings)
        for l_uuid in ("acc1", "acc2", "other"):
            self.record(l_uuid).options_ping = True
        self.online(source=None)
        self.destination_events = []
        self.service.pinger.add_observer(self.destination_events.append)
        self.next_round()

    def next_round(self):
        """Advance just past the pinger's next round (the Clock's float steps fall short of it)."""
        self.advance(self.service.pinger._round_call.getTime() - self.now() + TICK)

    def answer_pings(self, status=200):
        for sent in self.pings():
            self.stack.answer(sent, status)

    def fail_pings(self, error=TransactionTimeout("Timer F")):
        for sent in self.pings():
            sent.deferred.errback(error)

    def test_off_by_default(self):
        self.start(self.rows())
        for record in self.service.records.values():
            record.options_ping = True
        self.advance(60)
        self.assertIsNone(self.service.pinger)
        self.assertEqual(self.pings(pending=False), [])

    def test_only_destinations_with_an_options_ping_account(self):
        self.start(self.rows(), reg_options_ping_interval=INTERVAL)
        self.online(source=None)
        self.advance(3 * INTERVAL)
        self.assertEqual(self.pings(pending=False), [])

    def test_one_ping_per_destination_per_interval(self):
        self.start_pinging()
        pings = self.pings()
        self.assertEqual(sorted(str(s.target) for s in pings),
                         ["sip:other.example:5060", "sip:proxy.provider.example:5070"])
        self.answer_pings()
        self.next_round()
        self.assertEqual(len(self.pings()), 2)
        self.assertEqual(self.service.pinger.states(), {"sip:other.example:5060": State.UP,
                                                        "sip:proxy.provider.example:5070": State.UP})

    def test_any_response_means_alive(self):
        self.start_pinging(reg_ping_down_count=1)
        for status in (404, 407, 503):
            self.answer_pings(status)
            self.next_round()
        self.assertEqual(set(self.service.pinger.states().values()), {State.UP})
        self.assertEqual(self.destination_events[0].state, State.UP)
        self.assertEqual(len(self.destination_events), 2, "unknown -> up, once per destination")

    def go_down(self):
        self.answer_pings()
        for _ in range(3):
            self.next_round()
            self.fail_pings()
        self.assertEqual(self.service.pinger.state("sip:proxy.provider.example:5070"), State.DOWN)

    def test_down_then_back_up_reregisters_every_account_of_the_destination(self):
        self.start_pinging()
        self.go_down()
        down = [e for e in self.destination_events if e.state is State.DOWN]
        self.assertEqual([(e.destination, e.previous, e.accounts) for e in down],
                         [("sip:proxy.provider.example:5070", State.UP, 3), ("sip:other.example:5060", State.UP, 1)])
        self.assertEqual(self.registers(), [], "down alone sends no REGISTER")
        self.next_round()
        self.answer_pings()
        self.advance(TICK)
        self.assertEqual(self.registers(), [], "one answer is not enough (reg_ping_up_count 2)")
        self.next_round()
        self.answer_pings()
        self.advance(TICK)
        # Every account of the destination (plain has no options_ping), each registrar its own.
        self.assertEqual(sorted(s.contact_user for s in self.registers()), ["acc1", "acc2", "other", "plain"])
        up = [e for e in self.destination_events if e.previous is State.DOWN]
        self.assertEqual({e.state for e in up}, {State.UP})

    def test_registrar_by_address_is_asked_for_the_registers_domain(self):
        """A TLS registrar reached by address gets the REGISTERs' Request-URI (sip:r_domain):
        its certificate is verified against that name as for the REGISTERs, not an address."""
        rows = [make_row("tls1", auth_proxy="sip:192.0.2.7:5061;transport=tls", r_domain="sip.tls.example"),
                make_row("tls2", auth_proxy="sip:192.0.2.7:5061;transport=tls", r_domain="sip.tls.example")]
        self.start(rows, reg_options_ping_interval=INTERVAL)
        for record in self.service.records.values():
            record.options_ping = True
        self.online(source=None)
        self.next_round()
        (ping,) = self.pings()
        self.assertEqual(str(ping.target), "tls:192.0.2.7:5061")
        self.assertEqual(str(ping.request.uri), "sip:sip.tls.example")

    def test_unanswered_ping_counts_each_interval(self):
        """A silent registrar goes down after down_count intervals, not after Timer F each."""
        self.start_pinging()
        self.answer_pings()
        self.next_round()
        self.assertEqual(len(self.pings()), 2)
        for _ in range(3):
            self.next_round()
        self.assertEqual(len(self.pings(pending=False)), 4, "no new ping while one is in flight")
        self.assertEqual(set(self.service.pinger.states().values()), {State.DOWN})
        self.fail_pings()  # Timer F at last: already counted
        self.next_round()
        self.assertEqual(len(self.pings()), 2)

    def test_transport_errors_count(self):
        self.start_pinging(reg_ping_down_count=2)
        self.fail_pings(TransportError("connection refused"))
        self.next_round()
        self.fail_pings(TransportError("connection refused"))
        self.assertEqual(set(self.service.pinger.states().values()), {State.DOWN})
        self.assertIn("connection refused", self.destination_events[-1].reason)

    def test_disabled_accounts_are_not_reregistered(self):
        self.start_pinging()
        self.go_down()
        self.service.disable("l_uuid", "acc2")
        self.assertEqual(self.record("acc2").flags & Flag.DISABLED, Flag.DISABLED)
        for _ in range(2):
            self.next_round()
            self.answer_pings()
        self.advance(TICK)
        self.assertNotIn("acc2", [s.contact_user for s in self.registers()])

    def test_stop_ends_the_pings(self):
        self.start_pinging()
        self.answer_pings()
        self.successResultOf(self.service.stopService())
        self.advance(3 * INTERVAL)
        self.assertEqual(len(self.pings(pending=False)), 2)

