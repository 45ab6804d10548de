"""Operating txuac: JSON-RPC over HTTP, txuac-ctl, the SSH manhole, metrics."""
