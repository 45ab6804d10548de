"""txuac: Kamailio's uac module as a Twisted service."""

__version__ = "0.1.0"
