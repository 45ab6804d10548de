"""What the layers above use of the SIP stack: ``ISIPStack``, which ``SIPStack`` provides."""

from __future__ import annotations

from zope.interface import Attribute, Interface

from txuac.sip.address import ResponseOrigin


class ISIPStack(Interface):
    """Transactions bound to transports (``txuac.net.stack.SIPStack``), as its callers see it:
    the registrant, the Authenticator, req_send, the proxy and the admin port."""

    reactor = Attribute("The reactor whose clock and timers the stack uses.")
    resolver = Attribute("The RFC 3263 TargetResolver that turns URIs into Addresses.")
    server_header = Attribute("The Server header value of the responses the stack makes.")
    parse_errors = Attribute("Malformed messages received (int).")
    client_outcomes = Attribute("Client transactions by (method, outcome): a Counter.")
    server_outcomes = Attribute("Server transactions by (method, status class): a Counter.")
    retransmissions = Attribute("Requests and responses sent again (int).")
    pending_client_transactions = Attribute("Client transactions without a final response yet (int).")

    def send_request(request, target=None, on_provisional=None, source=None, timeout=None,  # noqa: N805
                     keep_via=False, t2=None):
        """Send ``request`` in a client transaction: a Deferred that fires with the final
        Response or fails with TransactionTimeout, TransportError or ResolutionError.
        ``t2``: the request's own cap on its retransmission interval (seconds)."""

    def start_request(request, target=None, on_provisional=None, source=None, timeout=None,  # noqa: N805
                      keep_via=False, t2=None, on_final=None):
        """``send_request`` returning a ClientRequest: its ``deferred``, the request as
        sent (``sent``, our Via and so the branch on top), where (``sent_to``), and the
        ResponseOrigin of the final response ``deferred`` fired with (``origin``).
        ``on_final``: called once with the final Response or the Failure, and the
        ClientRequest, instead of a ``deferred`` (then None)."""

    def send_stateless(request, target, source=None):  # noqa: N805
        """Send ``request`` as it is, without a transaction: a Deferred that fires with None."""

    def send_stateless_udp(request, target, source=None):  # noqa: N805
        """``send_stateless`` to a UDP Address at once: None, or TransportError raised."""

    def udp_target_now(request, target=None):  # noqa: N805
        """The UDP Address ``request`` goes to when known without resolving (``target``
        itself, or the IP address of ``target`` or of the next hop), else None."""

    def set_handler(method, handler):  # noqa: N805
        """Hand incoming ``method`` requests to ``handler(IncomingRequest)`` (None: the default)."""

    def set_cancel_handler(handler):  # noqa: N805
        """Hand CANCELs to ``handler(cancel, invite)`` (None: the stack answers them)."""

    def add_connection_lost_observer(observer):  # noqa: N805
        """Call ``observer(peer Address)`` when a TCP/TLS connection is lost not by our choice."""

    def remove_connection_lost_observer(observer):  # noqa: N805
        """Stop calling ``observer``."""

    def set_keepalive_interval(peer, seconds):  # noqa: N805
        """Send RFC 5626 keep-alives every ``seconds`` on the connection to ``peer`` (RFC 5626 4.4.1)."""

    def stop(grace=None):  # noqa: N805
        """Refuse new requests, wait for pending ones, close everything: a Deferred."""


__all__ = ["ISIPStack", "ResponseOrigin"]  # ResponseOrigin lives with Address; the stack names it
