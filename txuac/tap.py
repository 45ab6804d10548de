"""twistd plugin glue: ``twistd -n uac --config conf/uac.toml``."""

from __future__ import annotations

import sys

from twisted.application import service
from twisted.python import usage

from txuac import __version__
from txuac.config import load_settings
from txuac.errors import ConfigError


class Options(usage.Options):
    optParameters = [["config", "c", None, "Path to the TOML configuration file."]]

    def opt_version(self) -> None:
        """Print the txuac version and exit."""
        print(f"txuac {__version__}")
        sys.exit(0)

    def postOptions(self) -> None:
        if not self["config"]:
            raise usage.UsageError("--config is required")
        try:
            self["settings"] = load_settings(self["config"])
        except ConfigError as e:
            raise usage.UsageError(str(e)) from None


def makeService(options: Options) -> service.IService:
    from txuac.service import UACService

    return UACService(options["settings"])
