"""uacreg rows in bulk for tests and benchmarks: account N is ``acctNNNNN`` (l_uuid
``uuidNNNNN``), registering at ``auth_proxy`` with the password a KamailioRegistrar
of ``password_prefix`` accepts."""

from __future__ import annotations


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
