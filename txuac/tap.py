"""twistd plugin glue: ``twistd -n uac --config conf/uac.toml``."""

from __future__ import annotations

import sys

from twisted.application import service
from twisted.python import usage

from txuac import __version__


class Options(usage.Options):
    optParameters = [["config", "c", None, "Path to the TOML configuration file."]]

    def opt_version(self) -> None:
        """Print the txuac version and exit."""
        print(f"txuac {__version__}")
        sys.exit(0)

    def postOptions(self) -> None:
        if not self["config"]:
            raise usage.UsageError("--config is required")


class VersionOnlyService(service.Service):
    """Until the SIP stack lands, the service announces itself and stops the reactor."""

    def __init__(self, config_path: str):
        self.config_path = config_path

    def startService(self) -> None:
        from twisted.internet import reactor

        super().startService()
        print(f"txuac {__version__} (config {self.config_path}): the SIP stack is not built yet; exiting")
        reactor.callWhenRunning(reactor.stop)


def makeService(options: Options) -> service.IService:
    top = service.MultiService()
    VersionOnlyService(options["config"]).setServiceParent(top)
    return top
