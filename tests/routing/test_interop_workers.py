"""``[core] workers = 2`` under a real SIPp load: txuac as a real process tree (worker 0 by
``twist uac``, worker 1 its child) proxying calls and cancelled calls between SIPp peers.

The callers send each call from a socket of its own (SIPp ``-t un``), so the calls spread
over both workers by the kernel's SO_REUSEPORT hash, or all their calls from one socket
(``-t u1``), which the kernel gives to one worker and the workers spread by Call-ID; every
message of a transaction must reach the worker that has it (CANCEL and retransmissions by
their Call-ID, responses by the worker's own Via port) for every call to succeed.
docs/workers.rst.

RFC 3261's default timers (T1 500 ms): SIPp's UAS aborts a call on a retransmitted INVITE
once it has answered, and on a machine this busy an answer can take longer than a short T1.
"""

from __future__ import annotations

import os

from twisted.internet import defer
from twisted.trial.unittest import TestCase

from tests.support.peers import PeerProcess, free_port, require_program
from tests.support.sipp import HOST, udp_bound, until
from tests.support.sipp_proxy import ANONYMISING_SCRIPT, SCENARIOS, last_stats
from tests.support.workers import all_started, cpu_seconds, start_workers, worker_pids

CALLS = 200
CANCELS = 100
START_TIMEOUT = 60.0


class WorkersUnderSIPpLoadTests(TestCase):
    timeout = 240

    def setUp(self):
        self.sipp = require_program("sipp")
        self.workdir = os.path.abspath(self.mktemp())
        os.makedirs(self.workdir)

    def sipp_peer(self, scenario: str, name: str, port: int, *args: str) -> PeerProcess:
        argv = [self.sipp, "-sf", os.path.join(SCENARIOS, scenario), "-i", HOST, "-p", str(port), *args,
                "-trace_stat", "-stf", os.path.join(self.workdir, f"{name}.stats"), "-nostdin",
                "-max_socket", "1000", "-l", "400"]
        peer = PeerProcess(argv, cwd=self.workdir, log_path=os.path.join(self.workdir, f"{name}.out"))
        self.addCleanup(peer.stop)
        return peer

    @defer.inlineCallbacks
    def start_txuac(self, script_text: str, routing: str = ""):
        """txuac with two workers running ``script_text`` (``routing``: more [routing]
        lines); its port and its processes' pids once both workers started."""
        script = os.path.join(self.workdir, "routing.py")
        with open(script, "w") as f:
            f.write(script_text)
        port = free_port()
        txuac = start_workers(self.workdir, (
            "[core]\n"
            f'listen = ["udp:{HOST}:{port}"]\n'
            "workers = 2\n"
            "[rpc]\nenabled = false\n"
            f'[routing]\nscript = "{script}"\n{routing}'), workers=2)
        self.addCleanup(txuac.stop)
        started = yield until(lambda: all_started(txuac, 2) or not txuac.running(), START_TIMEOUT)
        self.assertTrue(started and txuac.running(), txuac.output()[-3000:])
        pids = worker_pids(txuac.pid)
        self.assertEqual(len(pids), 2, pids)
        return txuac, port, pids

    @defer.inlineCallbacks
    def calls_and_cancels(self, sockets: str):
        """CALLS calls and CANCELS cancelled calls through two workers, the callers sending
        from ``sockets`` (SIPp ``-t``: ``un`` a socket per call, ``u1`` one socket); all
        must succeed. The CPU each worker spent on them."""
        txuac, port, pids = yield self.start_txuac(ANONYMISING_SCRIPT)
        cpu_before = [cpu_seconds(pid) for pid in pids]

        uas_port, cancelled_port = free_port(), free_port()
        uas = self.sipp_peer("uas_call.xml", "uas", uas_port, "-t", "u1", "-m", str(CALLS))
        cancelled = self.sipp_peer("uas_cancel.xml", "uas_cancel", cancelled_port, "-t", "u1", "-m", str(CANCELS))
        up = yield until(lambda: udp_bound(uas_port) and udp_bound(cancelled_port), 20)
        self.assertTrue(up, uas.output()[-2000:] + cancelled.output()[-2000:])
        callers = [
            ("uac", self.sipp_peer("uac_call.xml", "uac", free_port(), f"{HOST}:{port}", "-t", sockets,
                                   "-key", "uas", f"{HOST}:{uas_port}", "-m", str(CALLS), "-r", "25",
                                   "-timeout", "120", "-timeout_error")),
            ("uac_cancel", self.sipp_peer("uac_cancel.xml", "uac_cancel", free_port(), f"{HOST}:{port}", "-t", sockets,
                                          "-key", "uas", f"{HOST}:{cancelled_port}", "-m", str(CANCELS), "-r", "10",
                                          "-timeout", "120", "-timeout_error")),
        ]
        for name, caller in callers:
            ended = yield until(lambda caller=caller: not caller.running(), 150, 0.1)
            self.assertTrue(ended, f"{name} still running: {caller.output()[-2000:]}")
        for name, caller in callers:
            stats = last_stats(os.path.join(self.workdir, f"{name}.stats"))
            expected = str(CALLS if name == "uac" else CANCELS)
            self.assertEqual((stats["SuccessfulCall(C)"], stats["FailedCall(C)"]), (expected, "0"),
                             f"{name}: {caller.output()[-3000:]}\n{txuac.output()[-3000:]}")
            self.assertEqual(caller.wait(0), 0, caller.output()[-3000:])
        spent = [cpu_seconds(pid) - before for pid, before in zip(pids, cpu_before)]
        self.assertEqual(worker_pids(txuac.pid), pids)  # no worker ended and started again
        self.assertNotIn("Traceback", txuac.output())
        return spent

    @defer.inlineCallbacks
    def test_calls_and_cancels_over_two_workers(self):
        """A socket per call: the kernel spreads the calls; each worker spent CPU on them."""
        spent = yield self.calls_and_cancels("un")
        self.assertTrue(all(seconds >= 0.05 for seconds in spent), spent)

    @defer.inlineCallbacks
    def test_one_source_spreads_over_both_workers(self):
        """Each caller sends all its calls from one socket, as an SBC or a trunk does: the
        kernel gives all of a caller's datagrams to one worker, which hands each call
        whose Call-ID the other owns to it (txuac.net.handoff); CANCELs, retransmissions
        and in-dialog requests follow their call. Both workers carry a fair share."""
        spent = yield self.calls_and_cancels("u1")
        self.assertTrue(all(seconds >= 0.25 * sum(spent) for seconds in spent), spent)

    @defer.inlineCallbacks
    def test_the_callees_bye_reaches_the_worker_with_the_dialog(self):
        """dialog.dlg_manage() and From/To restored from the dialog (restore_dlg): the
        callee's answers and BYE come to the listen address from another source than the
        caller's INVITE, which the kernel may give to the other worker; by its Call-ID
        each reaches the worker that has the INVITE's transaction and the dialog. The
        script answers an in-dialog BYE without a dialog 481, which fails the call."""
        txuac, port, _ = yield self.start_txuac(DIALOG_SCRIPT, "restore_dlg = true\n")
        uas_port = free_port()
        # -rsa: the callee sends everything to our listen address, as a UA routing by the
        # route set does (SIPp would answer the worker's own port the INVITE came from).
        uas = self.sipp_peer("uas_bye.xml", "uas_bye", uas_port, "-t", "u1", "-m", str(DIALOG_CALLS),
                             "-rsa", f"{HOST}:{port}")
        up = yield until(lambda: udp_bound(uas_port), 20)
        self.assertTrue(up, uas.output()[-2000:])
        caller = self.sipp_peer("uac_callee_bye.xml", "uac_callee_bye", free_port(), f"{HOST}:{port}", "-t", "un",
                                "-key", "uas", f"{HOST}:{uas_port}", "-m", str(DIALOG_CALLS), "-r", "10",
                                "-timeout", "60", "-timeout_error")
        ended = yield until(lambda: not caller.running() and not uas.running(), 90, 0.1)
        self.assertTrue(ended, caller.output()[-2000:] + uas.output()[-2000:])
        for name, peer in (("uac_callee_bye", caller), ("uas_bye", uas)):
            stats = last_stats(os.path.join(self.workdir, f"{name}.stats"))
            self.assertEqual((stats["SuccessfulCall(C)"], stats["FailedCall(C)"]), (str(DIALOG_CALLS), "0"),
                             f"{name}: {peer.output()[-3000:]}\n{txuac.output()[-3000:]}")
        self.assertNotIn("Traceback", txuac.output())


DIALOG_CALLS = 40
DIALOG_SCRIPT = ANONYMISING_SCRIPT.replace(
    "        rr.record_route()\n", "        dialog.dlg_manage()\n        rr.record_route()\n").replace(
    "        tm.t_relay()\n        return\n",
    "        if msg.method == \"BYE\" and dialog.is_in_dialog() < 0:\n"
    "            sl.sl_send_reply(481, \"No dialog in this worker\")\n"
    "            return\n"
    "        tm.t_relay()\n        return\n", 1)
