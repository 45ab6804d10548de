"""Starting txuac itself in a test: a UACService from a settings document, stopped at cleanup."""

from __future__ import annotations

from twisted.internet import defer, reactor, task

from txuac.config import settings_from_dict
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
