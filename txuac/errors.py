"""The one error hierarchy of txuac: every error we raise derives from TxuacError."""


class TxuacError(Exception):
    """Root of every error txuac raises on purpose."""


class SIPParseError(TxuacError):
    """A SIP message, header or URI is malformed.

    ``status`` is the SIP status a UAS should answer with (400, 505, 513, ...);
    ``element`` names the offending part (a header name, "start line", ...);
    ``message`` is the message as parsed so far when the parser refused it late (a bad
    CSeq): enough for a 400 along its Via.
    """

    def __init__(self, reason: str, status: int = 400, element: str | None = None):
        self.reason = reason
        self.status = status
        self.element = element
        self.message: object = None
        text = f"{element}: {reason}" if element else reason
        super().__init__(text)

    @property
    def reason_phrase(self) -> str:
        """A short reason phrase for a response line (no CR/LF, ASCII)."""
        phrase = str(self)
        phrase = phrase.encode("ascii", "replace").decode("ascii")
        return "".join(c if 32 <= ord(c) < 127 else "?" for c in phrase)[:120]


class ConfigError(TxuacError):
    """The configuration is invalid; the message names the key and the file."""


class InvalidListenSpec(TxuacError):
    """A socket written ``proto:host:port`` (a listen address, a row's socket, a $uac_req
    sock) that is not one; whoever read it names where it came from."""


class TransportError(TxuacError):
    """A message could not be sent or a connection failed."""


class TransactionTimeout(TxuacError):
    """A client transaction got no final response in time (Timer B or F)."""


class ResolutionError(TxuacError):
    """RFC 3263 resolution found no usable target."""


class AuthenticationError(TxuacError):
    """A challenge could not be answered, or our answer was refused.

    ``response`` is the 401/407 that could not be answered, when there was one.
    Messages never contain a password, an HA1 or an Authorization value.
    """

    def __init__(self, reason: str, response: object = None):
        super().__init__(reason)
        self.response = response  # a txuac.sip.Response


class ChallengeOriginError(AuthenticationError):
    """A 401/407 came from another address than the one the request was sent to: not
    answered (a digest sent to whoever asks can be cracked offline)."""


class InvalidRecord(TxuacError):
    """A uacreg row that cannot become an account; ``field`` names the column at fault."""

    def __init__(self, reason: str, field: str | None = None):
        super().__init__(reason)
        self.field = field


class UnknownFilterAttribute(TxuacError):
    """An account was looked up by an attribute other than l_uuid, l_username, r_username
    or auth_username (an RPC's or a script's filter)."""


class StoreError(TxuacError):
    """The account store failed (query error, lost connection, bad schema)."""


class StoreUnreachable(StoreError):
    """The store's server could not be reached (not up yet, or going down): worth another
    attempt, unlike a refused login or an unknown database."""


class AccountExists(StoreError):
    """A row could not be added to uacreg: its l_uuid is there already."""


class AddressReplaceError(TxuacError):
    """uac_replace_from/to cannot be applied (Kamailio's script return -1): a sequential
    request in auto mode, a URI too long for the vsf/vst encoding, a From/To missing."""


class RouteContextError(TxuacError):
    """A routing-script function was called from a route kind where Kamailio does not allow
    it (README section 4, "This function can be used from ..."): uac_auth outside a failure
    route, uac_restore_from outside the request route, ..."""


class ScriptArgumentError(TxuacError):
    """A routing-script function got an argument Kamailio's fixup would refuse when loading
    the script (a ``dst`` other than "$ru", "$du" or a callable): the request gets a 500."""


class UacRequestError(TxuacError):
    """A uac_req_send field ($uac_req key) is missing, of the wrong type, too long for
    Kamailio's buffer, or not valid SIP: nothing is sent (Kamailio's script return -1).
    Messages name the field, never a password."""
