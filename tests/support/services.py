"""Starting txuac itself in a test: a UACService from a settings document, stopped at cleanup."""

from __future__ import annotations

from twisted.internet import reactor

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
