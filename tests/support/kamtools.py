"""Kamailio's control tools as test clients: ``kamcmd`` (binrpc) and ``kamctl rpc``
(jsonrpcs FIFO), run without blocking the reactor, and a reader for what kamcmd prints.

kamctl reads its settings from a ``kamctlrc``; ``kamctl_home`` writes one naming the FIFO in
a directory used as ``HOME`` (``~/.kamctlrc``), so the machine's own files stay untouched.
"""

from __future__ import annotations

import os
import re
import shutil
import sqlite3
import tempfile

from twisted.internet import reactor, utils

from tests.support.peers import require_program

PRINTED_MEMBER = re.compile(r"^\t+([^:]+): ?(.*)$")


def short_dir(testcase, prefix: str = "txuac-ctl-") -> str:
    """A directory with a short path (a UNIX socket path must fit in 108 octets), removed at cleanup."""
    path = tempfile.mkdtemp(prefix=prefix)
    testcase.addCleanup(shutil.rmtree, path, True)
    return path


def kamcmd(socket: str, *args: str, timeout: float = 10.0):
    """Deferred[str]: what ``kamcmd -s socket args`` printed (stdout then stderr)."""
    program = require_program("kamcmd")
    d = utils.getProcessOutputAndValue(program, ["-s", socket, *args], env=dict(os.environ), reactor=reactor)
    d.addTimeout(timeout, reactor)
    return d.addCallback(lambda done: (done[0] + done[1]).decode("utf-8", "replace"))


def kamctl_home(directory: str, fifo: str) -> str:
    """Write ``directory``/.kamctlrc for the RPCFIFO engine on ``fifo``; returns ``directory``."""
    with open(os.path.join(directory, ".kamctlrc"), "w") as f:
        f.write(f'CTLENGINE="RPCFIFO"\nRPCFIFOPATH="{fifo}"\n')
    return directory


def kamctl_rpc(home: str, *args: str, timeout: float = 15.0):
    """Deferred[str]: what ``kamctl rpc args`` printed with HOME=``home`` (see kamctl_home)."""
    program = require_program("kamctl")
    env = {**os.environ, "HOME": home}
    d = utils.getProcessOutputAndValue(program, ["rpc", *args], env=env, path=home, reactor=reactor)
    d.addTimeout(timeout, reactor)
    return d.addCallback(lambda done: (done[0] + done[1]).decode("utf-8", "replace"))


def printed_structs(text: str) -> list[list[tuple[str, str]]]:
    """The top-level structs kamcmd printed, each as its (name, value) lines in order
    (members of nested structs are left out)."""
    structs: list[list[tuple[str, str]]] = []
    depth = 0
    for line in text.splitlines():
        if line == "{":
            structs.append([])
            depth = 1
            continue
        if line.strip() == "}":
            depth -= 1
            continue
        match = PRINTED_MEMBER.match(line)
        if match and depth == 1 and structs:
            structs[-1].append((match.group(1), match.group(2)))
            if match.group(2) == "{":
                depth += 1
    return structs


def kamailio_56_copy(path: str, directory: str) -> str:
    """A copy of the SQLite uacreg file ``path`` marked as table version 5, the one Kamailio
    5.6 checks for (its loader ignores the version 6 contact_user column)."""
    copy = os.path.join(directory, "uacreg-kamailio.sqlite")
    shutil.copyfile(path, copy)
    connection = sqlite3.connect(copy)
    connection.execute("UPDATE version SET table_version = 5 WHERE table_name = 'uacreg'")
    connection.commit()
    connection.close()
    return copy
