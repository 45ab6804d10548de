"""``reg_db_url``: which store holds the uacreg table, written as Kamailio writes it.

- ``sqlite:////var/lib/txuac/uacreg.sqlite``: an absolute path (four slashes, as Kamailio's
  db_sqlite takes it: the database part of the URL is ``/var/lib/...``);
- ``sqlite:///var/uacreg.sqlite``: a path relative to the working directory (or to
  ``base_dir`` given to txuac.registrant.store.open_store);
- ``postgres://user:password@host:port/database`` (``postgresql://`` too); user, password and
  port are optional (port 5432); an IPv6 host goes in brackets (``[::1]``).
- ``mysql://user:password@host:port/database`` (``mariadb://`` too), port 3306; host
  ``localhost`` means the server's Unix socket (as libmysqlclient, which Kamailio's db_mysql
  uses, takes it), ``/run/mysqld/mysqld.sock`` unless ``?unix_socket=/path`` names another.

Parsed as Kamailio's ``parse_db_url`` (K:src/lib/srdb1/db_id.c) does, so that a URL copied
from kamailio.cfg means the same here: no percent-decoding, the password runs from the first
``:`` after the user to the last ``@`` (it may contain ``:`` and ``@``, not ``/``). Unlike
Kamailio we refuse ``?parameters`` (it drops them silently; MySQL's ``?unix_socket=`` aside) and
a host in an SQLite URL.
"""

from __future__ import annotations

import dataclasses
import os
import re

from txuac.errors import ConfigError

DEFAULT_POSTGRES_PORT = 5432
DEFAULT_MYSQL_PORT = 3306
DEFAULT_MYSQL_SOCKET = "/run/mysqld/mysqld.sock"
MASK = "***"
_SCHEMES = {"sqlite": "sqlite", "postgres": "postgres", "postgresql": "postgres", "mysql": "mysql", "mariadb": "mysql"}
_TABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


@dataclasses.dataclass(frozen=True)
class StoreURL:
    """A parsed ``reg_db_url``. ``masked`` is the text to log: the password reads ``***``."""

    kind: str                       # "sqlite", "postgres" or "mysql"
    masked: str
    path: str | None = None         # sqlite: as written, relative to the working directory or absolute
    host: str | None = None         # postgres, mysql (IPv6 without brackets)
    port: int | None = None
    user: str | None = None
    password: str | None = dataclasses.field(default=None, repr=False)
    database: str | None = None
    unix_socket: str | None = None  # mysql: the server's socket (host localhost or ?unix_socket=)

    def __str__(self) -> str:
        return self.masked

    def resolved_path(self, base_dir: str | None = None) -> str:
        """The SQLite file's absolute path: a relative path is taken from ``base_dir`` (default: cwd)."""
        if self.kind != "sqlite" or self.path is None:
            raise ValueError(f"{self.masked} is not an SQLite URL")
        return os.path.abspath(os.path.join(base_dir or os.getcwd(), self.path))

    def connection_arguments(self) -> dict:
        """Keyword arguments for psycopg2.connect (holds the password: never log them)."""
        if self.kind != "postgres":
            raise ValueError(f"{self.masked} is not a PostgreSQL URL")
        arguments = {"host": self.host, "port": self.port, "dbname": self.database}
        if self.user is not None:
            arguments["user"] = self.user
        if self.password is not None:
            arguments["password"] = self.password
        return arguments


def mask_url(url: str) -> str:
    """``url`` with the password, if there is one, replaced by ``***`` (for any text, even invalid)."""
    # Errs on the side of masking: the password ends at the last '@' of the URL (as Kamailio
    # reads it), even when a '/' inside it makes the URL invalid.
    scheme, separator, rest = url.partition("://")
    if not separator:
        return url
    userinfo, at, tail = rest.rpartition("@")
    if not at:
        return url
    user, colon, _password = userinfo.partition(":")
    if not colon:
        return url
    return f"{scheme}://{user}:{MASK}@{tail}"


def parse_store_url(url: str) -> StoreURL:
    """Parse a ``reg_db_url``; ConfigError (naming the URL, password masked) when it is not one we serve."""
    if not isinstance(url, str):
        raise ConfigError(f"reg_db_url must be a string, not {type(url).__name__}")
    masked = mask_url(url)

    def bad(reason: str) -> ConfigError:
        return ConfigError(f"reg_db_url {masked!r}: {reason}")

    scheme, separator, rest = url.partition("://")
    if not separator:
        raise bad("not a database URL (expected sqlite:///path or postgres://user:password@host:port/database)")
    kind = _SCHEMES.get(scheme.lower())
    if kind is None:
        raise bad(f"unsupported database {scheme!r} (supported: sqlite, postgres, mysql)")
    if any(c in url for c in "\r\n\t\0"):
        raise bad("control characters in the URL")
    query = None
    if kind == "mysql":
        question = rest.find("?", rest.rfind("@") + 1)
        if question >= 0:
            rest, query = rest[:question], rest[question + 1:]
    if "?" in rest:
        raise bad("URL parameters (?...) are not supported")

    slash = rest.find("/")
    if slash < 0:
        raise bad("no database: the URL needs /database (postgres) or /path (sqlite)")
    netloc, database = rest[:slash], rest[slash + 1:]

    if kind == "sqlite":
        if netloc:
            raise bad("an SQLite URL has no host: write sqlite:////absolute/path or sqlite:///relative/path")
        if not database or database.endswith("/"):
            raise bad("no SQLite file name")
        return StoreURL(kind="sqlite", masked=masked, path=database)

    userinfo, at, hostport = netloc.rpartition("@")
    user = password = None
    if at:
        user, colon, password_text = userinfo.partition(":")
        password = password_text if colon else None
        if not user:
            raise bad("empty user name before '@'")
    host, port = _split_host_port(hostport, bad, DEFAULT_MYSQL_PORT if kind == "mysql" else DEFAULT_POSTGRES_PORT)
    if not database:
        raise bad("no database name after the host")
    if "/" in database:
        raise bad("the database name contains '/'")
    if kind == "mysql":
        return StoreURL(kind="mysql", masked=masked, host=host, port=port, user=user, password=password,
                        database=database, unix_socket=_mysql_socket(host, query, bad))
    return StoreURL(kind="postgres", masked=masked, host=host, port=port, user=user, password=password,
                    database=database)


def _mysql_socket(host: str, query: str | None, bad) -> str | None:
    """The Unix socket a MySQL URL names: ``?unix_socket=/path``, else the default one for localhost."""
    if query is None:
        return DEFAULT_MYSQL_SOCKET if host == "localhost" else None
    name, equals, path = query.partition("=")
    if name != "unix_socket" or not equals:
        raise bad(f"unknown URL parameter {query!r} (only unix_socket=/path is understood)")
    if not path.startswith("/") or "&" in path:
        raise bad(f"unix_socket must be one absolute path, not {path!r}")
    return path


def _split_host_port(hostport: str, bad, default_port: int = DEFAULT_POSTGRES_PORT) -> tuple[str, int]:
    if hostport.startswith("["):
        end = hostport.find("]")
        if end < 0:
            raise bad("unterminated '[' in the host")
        host, rest = hostport[1:end], hostport[end + 1:]
        if rest and not rest.startswith(":"):
            raise bad("junk after ']' in the host")
        port_text = rest[1:] if rest else None
    else:
        host, colon, port_text = hostport.partition(":")
        if not colon:
            port_text = None
    if not host:
        raise bad("no host")
    if any(c in host for c in " @[]"):
        raise bad(f"bad host {host!r}")
    if port_text is None:
        return host, default_port
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise bad(f"bad port {port_text!r}")
    return host, int(port_text)


def check_table_name(table: str, key: str = "reg_db_table") -> str:
    """``reg_db_table`` (or ``key``) must be a plain SQL identifier (it is written into queries)."""
    if not isinstance(table, str) or not _TABLE_NAME.match(table):
        raise ConfigError(f"{key} {table!r} is not a plain SQL identifier (letters, digits, _)")
    return table

