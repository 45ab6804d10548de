"""The registrant's settings: Kamailio's uac_reg parameters under their own names, and
ours. The one home of their defaults: [uac] in txuac.config takes its defaults from here."""

from __future__ import annotations

from dataclasses import dataclass

from txuac.sip.digest import ALL_ALGORITHMS


@dataclass(frozen=True)
class RegistrantSettings:
    """Kamailio's uac_reg parameters (same names and defaults) and ours."""

    reg_contact_addr: str = "127.0.0.1:5060"
    reg_timer_interval: int = 90
    # Kamailio's name, our default: 0 (Kamailio's) disables an account on its first failure.
    reg_retry_interval: int = 30
    reg_random_delay: int = 0
    # Kamailio's name, our default: one Call-ID per account, kept across restarts in our own
    # table; False (Kamailio's 0) makes a new Call-ID for every REGISTER.
    reg_keep_callid: bool = True
    reg_active: bool = True
    reg_use_domain: bool = False
    reload_delta: int = 30
    # Ours: REGISTERs started per second at most (refreshes and first registrations).
    reg_send_rate: float = 3000.0
    # Ours: unregister every online account on a clean shutdown.
    reg_unregister_on_stop: bool = False
    # Ours: retries per failure kind (txuac.registrant.retry); seconds, jitter in percent.
    reg_retry_max_interval: int = 600
    reg_forbidden_retry_interval: int = 1800
    reg_fatal_retry_interval: int = 3600
    reg_retry_jitter: int = 20
    # Ours: REGISTER cycles in flight at most; the queue waits beyond it.
    reg_max_in_flight: int = 1000
    # Ours: the same two limits per destination (registrar or auth_proxy host).
    reg_dest_max_in_flight: int = 1000
    reg_dest_rate: float = 3000.0
    # Ours: OPTIONS pings to the registrar destinations of accounts with options_ping
    # (seconds, 0 off), down after reg_ping_down_count failures, up after reg_ping_up_count.
    reg_options_ping_interval: int = 0
    reg_ping_up_count: int = 2
    reg_ping_down_count: int = 3
    # Ours: a registrar whose REGISTERs fail by timeout or transport error (or stay
    # unanswered) gets one OPTIONS every reg_probe_interval seconds, doubling up to
    # reg_probe_max_interval, until it answers; then all its accounts re-register.
    reg_probe: bool = True
    reg_probe_interval: float = 2.0
    reg_probe_max_interval: float = 30.0
    user_agent: str | None = None
    # Ours: a REGISTER's RFC 3261 T2 in seconds, the cap on its retransmission interval.
    reg_timer_t2: float = 0.5
    # Log the routine transitions (to registering, to online) at debug level; txuac's
    # service sets it from [log] level. Observers see every transition either way.
    log_routine: bool = True
    # Seconds a registrar's temporary failures are gathered for before their one info line.
    failure_summary_interval: float = 10.0
    auth_algorithms: tuple[str, ...] = ALL_ALGORITHMS
    default_socket: str | None = None  # proto:ip:port when the row's socket is empty
