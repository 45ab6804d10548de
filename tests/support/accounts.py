"""uacreg rows for tests and benchmarks: one valid row or record (``make_row``,
``make_record``) and rows in bulk (``uacreg_rows``: account N is ``acctNNNNN``, l_uuid
``uuidNNNNN``, registering at ``auth_proxy`` with the password a KamailioRegistrar of
``password_prefix`` accepts)."""

from __future__ import annotations

from tests.support.kamailio import KamailioRegistrar
from txuac.registrant.record import RegistrationRecord, record_from_row


def uacreg_rows(count: int, auth_proxy: str, realm: str = "test.example", password_prefix: str = "pw-",
                start: int = 0, **overrides) -> list[dict]:
    """``count`` rows from account number ``start``; ``overrides`` set columns of every row."""
    rows = []
    for number in range(start, start + count):
        user = f"acct{number:05d}"
        row = {
            "l_uuid": f"uuid{number:05d}", "l_username": user, "l_domain": "local.example",
            "r_username": user, "r_domain": realm, "realm": realm, "auth_username": user,
            "auth_password": password_prefix + user, "auth_ha1": "", "auth_proxy": auth_proxy,
            "expires": 600, "flags": 0, "reg_delay": 0, "contact_addr": "", "socket": "", "contact_user": "",
        }
        row.update(overrides)
        rows.append(row)
    return rows


HA1 = "0123456789abcdef0123456789abcdef"


def make_row(l_uuid: str = "acc1", **overrides) -> dict:
    """A valid uacreg row as a store returns it (every column, Kamailio's names)."""
    row = {
        "l_uuid": l_uuid,
        "l_username": f"local-{l_uuid}",
        "l_domain": "pbx.example.com",
        "r_username": f"remote-{l_uuid}",
        "r_domain": "sip.provider.example",
        "realm": "",
        "auth_username": f"auth-{l_uuid}",
        "auth_password": "secret-pw",
        "auth_ha1": "",
        "auth_proxy": "sip:proxy.provider.example:5070",
        "expires": 3600,
        "flags": 0,
        "reg_delay": 0,
        "contact_addr": "",
        "socket": "",
        "contact_user": "",
    }
    row.update(overrides)
    return row


def make_record(l_uuid: str = "acc1", now: float = 0.0, **overrides) -> RegistrationRecord:
    return record_from_row(make_row(l_uuid, **overrides), now)


REALM = "test.example"


def account_rows(registrar: KamailioRegistrar, count: int) -> list[dict]:
    """uacreg rows whose credentials the registrar accepts; auth_proxy is the registrar."""
    host, port = registrar.address
    rows = []
    for number in range(count):
        user = f"acct{number:05d}"
        rows.append({
            "l_uuid": f"uuid{number:05d}", "l_username": user, "l_domain": "local.example",
            "r_username": user, "r_domain": REALM, "realm": REALM, "auth_username": user,
            "auth_password": registrar.password_for(user), "auth_ha1": "",
            "auth_proxy": f"sip:{host}:{port}", "expires": 600, "flags": 0, "reg_delay": 0,
            "contact_addr": "", "socket": "", "contact_user": "",
        })
    return rows
