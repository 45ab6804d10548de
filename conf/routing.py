"""Example txuac routing script: a proxy in front of a SIP trunk that hides the caller's
From (restored in the dialog's later requests and in replies) and answers the trunk's
digest challenges. Enable it with ``[routing] script = "routing.py"`` in uac.toml.

Every route is called with the message (a txuac.sip Request; the Response in
onreply_route; the event in event_route) and the proxy's namespaces ``uac``, ``tm``, ``rr``, ``dialog``,
``sl``. Their functions keep the names of Kamailio's KEMI (``KSR.tm.t_relay()`` is
``tm.t_relay()``) and return what Kamailio's functions return (1 or a positive number
for success, a negative number for failure). A function used in a route where Kamailio
does not allow it raises RouteContextError (uac_auth outside a failure route, ...).
An exception in a route is logged with the traceback of this file and answered 500.
"""

from txuac.routing.script import event_route, failure_route, onreply_route, request_route

TRUNK = "sip:trunk.example.net"
ANONYMOUS = "sip:anonymous@anonymous.invalid"


@request_route
def route(msg, uac, tm, rr, dialog, sl):
    """Every request that is not a retransmission or a CANCEL of ours starts here."""
    if msg.method == "OPTIONS" and msg.uri.user is None:
        sl.sl_send_reply(200, "OK")  # keep-alives addressed to us
        return
    # In-dialog requests: follow the Route set; vsf/vst on our Record-Route give back the
    # original From/To (restore_mode = "auto": no call needed here).
    if msg.to is not None and "tag" in msg.to.params:
        if rr.loose_route() < 0 and msg.method != "ACK":
            sl.sl_send_reply(404, "Not here")
            return
        tm.t_relay()
        return
    if msg.method == "INVITE":
        dialog.dlg_manage()  # with restore_dlg = true the URIs go in dialog variables
        rr.record_route()
        uac.uac_replace_from("Anonymous", ANONYMOUS)  # Kamailio README 4.1
        tm.t_on_failure("TRUNKAUTH")
    tm.t_relay_to_uri(TRUNK)


@failure_route("TRUNKAUTH")
def trunk_auth(msg, uac, tm, rr, dialog, sl):
    """Every branch failed (armed by t_on_failure above). The trunk challenged the INVITE:
    answer it with [uac] credential (README 4.7); t_relay here adds a branch to the same
    transaction. uac_auth is not in the proxy yet: until it is, a 401/407 makes this
    route fail (logged) and the challenge goes to the caller; other failures go upstream."""
    if tm.t_is_canceled() > 0:
        return
    if tm.t_check_status("401|407") > 0 and uac.uac_auth() > 0:
        tm.t_relay()


@onreply_route
def reply(msg, uac, tm, rr, dialog, sl):
    """Each reply the proxy receives, before tm handles it. The From/To restore of replies
    is automatic; here, the trunk's "503 Service Unavailable" is reported with a
    uac_req_send of its own (README 4.9; the $uac_req fields are its keyword arguments)."""
    if msg.status == 503:
        uac.uac_req_send(method="MESSAGE", ruri="sip:noc@example.net", furi="sip:proxy@example.net",
                         turi="sip:noc@example.net", hdrs="Content-Type: text/plain\r\n",
                         body=f"trunk answered 503 to {msg.call_id}", evroute=1)


@event_route("uac:reply")
def uac_reply(msg, uac, tm, rr, dialog, sl):
    """The reply to a request sent with uac_req_send (README 6.1; evroute=1: each final
    reply, a 401/407 answered with auser/apasswd first). ``msg`` is the event: the fields
    sent (msg.ruri, msg.evparam, ...), msg.evcode, msg.evtype (1 a reply, msg.response;
    2 local: 408 timeout, 477 not sent, 478 unresolvable). Here, nothing to do but to
    look at it."""
    return msg.evcode
