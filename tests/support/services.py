"""Starting txuac itself in a test: a UACService from a settings document, stopped at cleanup;
one with JSON-RPC and accounts loaded (``start_service``), and waiting on its state."""

from __future__ import annotations

from twisted.internet import defer, reactor, task

from tests.support.accounts import HA1, make_row
from tests.support.peers import free_port
from tests.support.stores import sqlite_uacreg
from txuac.config import Settings, load_settings, settings_from_dict
from txuac.service import UACService


def start_uac(testcase, document: dict) -> UACService:
    """A started UACService configured by ``document`` (the TOML sections as a dict).

    Without an [rpc] section the JSON-RPC server is off (it would bind port 5064).
    """
    if "rpc" not in document:
        document = {**document, "rpc": {"enabled": False}}
    service = UACService(settings_from_dict(document), reactor)
    service.startService()
    testcase.addCleanup(service.stopService)
    return service


@defer.inlineCallbacks
def wait_online(service: UACService, count: int, timeout: float = 60.0):
    """Wait until ``count`` accounts of ``service`` are online (regactive), or fail."""
    deadline = reactor.seconds() + timeout
    while service.registrant.counters()["regactive"] < count:
        if reactor.seconds() > deadline:
            raise AssertionError(f"only {service.registrant.counters()} after {timeout} s")
        yield task.deferLater(reactor, 0.1, lambda: None)


def wait_for_store(service: UACService, timeout: float = 10.0):
    """Deferred: fires once ``service``'s registrant has opened its store and loaded the
    accounts (fails with the StoreError that kept it from starting, or after ``timeout``)."""
    return service.registrant_ready().addTimeout(timeout, reactor)


LOOPBACK_T1_MS = 50
RPC_LISTEN = "tcp:0:interface=127.0.0.1"


TOKEN = "a-token-of-32-characters-or-so!!"


def dead_rows() -> list[dict]:
    """Accounts whose proxy is a loopback port where nothing answers."""
    proxy = f"sip:127.0.0.1:{free_port()}"
    return [
        make_row("1000", auth_proxy=proxy, flags=1),  # numeric l_uuid, disabled: sends nothing
        make_row("with-ha1", auth_proxy=proxy, auth_password="", auth_ha1=HA1.upper(), flags=1,
                 contact_addr="192.0.2.1:5080", socket="", contact_user="line7"),
        make_row("failing", auth_proxy=proxy),  # registers, gets no answer
    ]


@defer.inlineCallbacks
def start_service(testcase, rows: list[dict] | None, rpc: dict | None = None, uac: dict | None = None):
    """A started UACService with JSON-RPC on a free loopback port and ``rows`` loaded."""
    sip_port = free_port()
    document = {"core": {"listen": [f"udp:127.0.0.1:{sip_port}"], "timer_t1": 20},
                "rpc": dict({"listen": RPC_LISTEN}, **(rpc or {}))}
    if rows is not None:
        path = yield sqlite_uacreg(testcase, rows)
        document["uac"] = dict({"reg_db_url": f"sqlite:///{path}", "reg_contact_addr": f"127.0.0.1:{sip_port}",
                                "reg_retry_interval": 60}, **(uac or {}))
        testcase.store_path = path
    service = start_uac(testcase, document)
    if rows is not None:
        yield wait_until(lambda: len(service.registrant.records) == len(rows))
    return service


@defer.inlineCallbacks
def wait_until(condition, timeout: float = 10.0):
    deadline = reactor.seconds() + timeout
    while not condition():
        if reactor.seconds() > deadline:
            raise AssertionError(f"not true within {timeout} s")
        yield task.deferLater(reactor, 0.02, lambda: None)


def start_core_service(testcase, core: dict, tls: dict | None = None) -> UACService:
    """A started UACService with ``core`` settings (timer_t1 defaults to the loopback tests'
    50 ms), stopped at cleanup."""
    document = {"core": {"timer_t1": LOOPBACK_T1_MS, **core}}
    if tls is not None:
        document["tls"] = tls
    return start_uac(testcase, document)


def load_printed_config(testcase, text: str) -> Settings:
    """A configuration printed by a command (``txuac-ctl sample-config``), written to a
    file of the test's and loaded as txuac loads it."""
    path = testcase.mktemp() + ".toml"
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return load_settings(path)
