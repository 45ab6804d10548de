"""Where registration accounts come from: Kamailio's ``uacreg`` table, behind one interface.

Backends own their SQL: SQLite through twisted.enterprise.adbapi (the embedded
default) and PostgreSQL through txpostgres. Rows come back as plain dicts with
Kamailio's column names; validating them is the registrant's job, so that a bad
row is skipped with a reason instead of failing a whole load.
"""

from __future__ import annotations

from zope.interface import Attribute, Interface

# Kamailio's uacreg columns in its own order (K:uac_reg.c uac_reg_load_db); contact_user
# exists from table version 6 on.
COLUMNS = (
    "l_uuid", "l_username", "l_domain", "r_username", "r_domain", "realm", "auth_username",
    "auth_password", "auth_ha1", "auth_proxy", "expires", "flags", "reg_delay", "contact_addr",
    "socket", "contact_user",
)
SUPPORTED_TABLE_VERSIONS = (5, 6)


class IRegistrationStore(Interface):
    """A uacreg table. Every method returns a Deferred; failures are StoreError."""

    url = Attribute("The store's URL with the password masked, for logs.")
    table_version = Attribute("The table version read by open(): 5 (no contact_user) or 6.")

    def open():  # noqa: N805 - zope interface signature
        """Connect (creating an SQLite file with the table and its version row when the file
        does not exist) and check the table version: Deferred[None]; StoreError when the
        version is not 5 or 6 or the table is missing."""

    def load_all():  # noqa: N805
        """Deferred[list[dict]]: every row, keys as in COLUMNS (contact_user '' on version 5)."""

    def load_one(l_uuid):  # noqa: N805
        """Deferred[dict | None]: the row with this l_uuid, None when there is none."""

    def close():  # noqa: N805
        """Deferred[None]: release connections."""
