"""txuac with ``[core] workers`` as a real process tree: worker 0 started by ``twist uac``,
the others its children; their CPU read from /proc."""

from __future__ import annotations

import os

from tests.support.peers import PeerProcess
from tests.support.twistd import child_environment, twist_argv
from txuac import __version__


def start_workers(workdir: str, config_text: str, workers: int, log_name: str = "txuac.log") -> PeerProcess:
    """``twist uac`` on ``config_text`` (written to workdir/uac.toml), in its own process group."""
    config = os.path.join(workdir, "uac.toml")
    with open(config, "w") as f:
        f.write(config_text)
    return PeerProcess(twist_argv("--log-format", "text", "uac", "--config", config), cwd=workdir,
                       env=child_environment(), log_path=os.path.join(workdir, log_name))


def all_started(process: PeerProcess, workers: int) -> bool:
    """Worker 0 and the ``workers - 1`` others have logged that they started."""
    return process.output().count(f"txuac {__version__} started") >= workers


def worker_pids(pid: int) -> list[int]:
    """Worker 0 (``pid``) and its children, the other workers."""
    pids = [pid]
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/children") as f:
                pids += [int(child) for child in f.read().split()]
        except OSError:
            continue
    return pids


def cpu_seconds(pid: int) -> float:
    """utime + stime of process ``pid`` so far (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
