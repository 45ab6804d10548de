"""UNIX sockets and FIFOs of the control transports: a stale socket left by a previous
run is removed (a live one is refused), the owner set as configured, and the peer of a
connection named by its user id for the audit log."""

from __future__ import annotations

import errno
import grp
import os
import pwd
import socket
import stat
import struct

from txuac.errors import ConfigError


def clear_stale_socket(path: str, where: str) -> None:
    """Remove ``path`` when it is a socket nobody listens on; refuse a live one or another file."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise ConfigError(f"{where}: {path} exists and is not a socket")
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        probe = socket.socket(socket.AF_UNIX, kind)
        try:
            probe.connect(path)
        except ConnectionRefusedError:
            continue
        except OSError as e:
            if e.errno == errno.EPROTOTYPE:
                continue
            raise ConfigError(f"{where}: cannot check {path}: {e.strerror}") from None
        else:
            raise ConfigError(f"{where}: {path} is in use by another process")
        finally:
            probe.close()
    os.unlink(path)


def set_owner(path: str, user: str | None, group: str | None, where: str) -> None:
    """chown ``path`` to ``user`` and ``group`` (names or numbers; None keeps it)."""
    if user is None and group is None:
        return
    try:
        uid = _id(user, lambda name: pwd.getpwnam(name).pw_uid)
        gid = _id(group, lambda name: grp.getgrnam(name).gr_gid)
    except KeyError as e:
        raise ConfigError(f"{where}: no such user or group {e.args[0]}") from None
    try:
        os.chown(path, uid, gid)
    except OSError as e:
        raise ConfigError(f"{where}: cannot give {path} to {user or ''}:{group or ''}: {e.strerror}") from None


def _id(name: str | None, look_up) -> int:
    if name is None:
        return -1
    return int(name) if name.isdigit() else look_up(name)


def unix_peer(sock: socket.socket | None, path: str) -> str:
    """``uid 1000 pid 4242 on /run/txuac/txuac_ctl`` (SO_PEERCRED, Linux), else the path."""
    try:
        pid, uid, _ = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                          struct.calcsize("3i")))
    except (AttributeError, OSError):
        return f"unix:{path}"
    return f"uid {uid} pid {pid} on unix:{path}"
