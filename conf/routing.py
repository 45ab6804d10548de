"""Example txuac routing script: a proxy between a local PBX and a SIP trunk. Enable it
with ``[routing] script = "routing.py"`` in uac.toml (docs/routing.rst).

- Calls from the PBX to the trunk hide the caller (From replaced, restored for the rest
  of the dialog and in every reply) and answer the trunk's digest challenges, with the
  credentials of the caller's uacreg account when it has one, else ``[uac] credential``.
- Calls from the trunk to a registered account (the trunk calls the Contact txuac
  registered, whose user is the account's l_uuid) go to the account's local user.

Every route is called with the message (a txuac.sip Request; the Response in
onreply_route; the event in event_route) and the proxy's namespaces ``uac``, ``tm``,
``rr``, ``dialog``, ``sl``. Their functions keep the names of Kamailio's KEMI
(``KSR.tm.t_relay()`` is ``tm.t_relay()``) and return what Kamailio's functions return
(1 or a positive number for success, a negative number for failure). A function used in
a route where Kamailio does not allow it raises RouteContextError (uac_auth outside a
failure route, ...). An exception in a route is logged with the traceback of this file
and the request is answered 500.
"""

from txuac.routing.script import branch_route, event_route, failure_route, onreply_route, request_route

TRUNK = "sip:trunk.example.net"
ANONYMOUS = "sip:anonymous@anonymous.invalid"


@request_route
def route(msg, uac, tm, rr, dialog, sl):
    """Every request that is not a retransmission or a CANCEL of ours starts here."""
    if msg.method == "OPTIONS" and msg.uri.user is None:
        sl.sl_send_reply(200, "OK")  # keep-alives addressed to us
        return
    # In-dialog requests follow the Route set. With restore_mode = "auto" (the default)
    # rr.loose_route() also gives back the original From/To (from the vsf/vst of our
    # Record-Route, or the dialog with restore_dlg), and a CSeq raised by uac_auth stays
    # raised: nothing to call for them.
    if msg.to is not None and msg.to.tag is not None:
        if rr.loose_route() < 0 and msg.method != "ACK":
            sl.sl_send_reply(404, "Not here")
            return
        tm.t_relay()
        return
    if msg.method != "INVITE":
        sl.sl_send_reply(405, "Method Not Allowed")
        return
    rr.record_route()
    # From the trunk to one of our registrations (README 4.10): the Request-URI becomes
    # the account's sip:l_username@l_domain, the local user at the PBX.
    if uac.uac_reg_lookup(msg.uri.user, "$ru") > 0:
        tm.t_relay()
        return
    # From the PBX to the trunk, hiding the caller (README 4.1).
    dialog.dlg_manage()  # with restore_dlg = true the URIs go in dialog variables
    caller = msg.from_.uri.user
    # As the caller's uacreg account when it has one (README 4.13): its AOR as Request-URI,
    # its auth_proxy as next hop, its credentials for uac_auth.
    as_account = uac.uac_reg_request_to(caller, 1) > 0
    uac.uac_replace_from("Anonymous", ANONYMOUS)
    tm.t_on_failure("TRUNKAUTH")
    tm.t_on_branch("TRUNK")
    if as_account:
        tm.t_relay()
    else:
        tm.t_relay_to_uri(TRUNK)


@branch_route("TRUNK")
def trunk_branch(msg, uac, tm, rr, dialog, sl):
    """Each branch to the trunk, just before it goes (what it changes stays on the branch)."""
    msg.headers.set("P-Preferred-Identity", f"<{ANONYMOUS}>")


@failure_route("TRUNKAUTH")
def trunk_auth(msg, uac, tm, rr, dialog, sl):
    """Every branch failed (armed by t_on_failure). A 401/407 from the trunk is answered
    (README 4.7) and t_relay adds a branch to the same transaction; its CSeq is raised by
    one, and so is every later request of the caller in this dialog, without any setting.
    Other failures, and a second challenge (this route is not re-armed), go upstream."""
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
