"""txuac.admin.worker_rpc: worker 0's account methods asking the other workers over their
UNIX sockets (real sockets, real reactor), each worker with its own method table."""

from __future__ import annotations

import os
import shutil
import tempfile

from twisted.internet import defer, reactor
from twisted.trial.unittest import TestCase

from txuac.admin.rpc import Dispatcher, Param, RPCError
from txuac.admin.uac_rpc import FILTER_PARAMS, RECORD_NOT_FOUND
from txuac.admin.worker_rpc import WorkerPeers, WorkerRPCService, fan_out, worker_socket_path


class Worker:
    """A worker's method table over its records (l_uuid -> username); calls recorded."""

    def __init__(self, records: dict[str, str]):
        self.records = records
        self.calls: list[tuple] = []
        self.active = 1
        self.dispatcher = Dispatcher(reactor)
        add = self.dispatcher.register
        add("uac.reg_dump", lambda: [{"l_uuid": k, "l_username": v} for k, v in sorted(self.records.items())])
        add("uac.reg_info", self.info, FILTER_PARAMS)
        for name in ("uac.reg_enable", "uac.reg_disable", "uac.reg_register", "uac.reg_unregister"):
            add(name, lambda attr, val, name=name: self.called(name, attr, val), FILTER_PARAMS)
        add("uac.reg_remove", lambda l_uuid: self.called("uac.reg_remove", l_uuid), (Param("l_uuid"),))
        add("uac.reg_refresh", lambda l_uuid: self.called("uac.reg_refresh", l_uuid), (Param("l_uuid"),))
        add("uac.reg_add", lambda *values: self.called("uac.reg_add", *values), None)
        add("uac.reg_reload", lambda: self.called("uac.reg_reload"))
        add("uac.reg_active", self.set_active, (Param("mode", int),))
        add("core.version", lambda: "worker's own")

    def info(self, attr, val):
        for l_uuid, username in self.records.items():
            if (attr, val) in (("l_uuid", l_uuid), ("l_username", username)):
                return {"l_uuid": l_uuid}
        raise RECORD_NOT_FOUND

    def called(self, *call):
        self.calls.append(call)

    def set_active(self, mode):
        old, self.active = self.active, mode
        return {"omode": old, "nmode": mode}


OWNERS = {"a": 0, "b": 1, "c": 2, "d": 1}


class FanOutTests(TestCase):
    def setUp(self):
        self.directory = tempfile.mkdtemp(prefix="txuac-test-")
        self.addCleanup(shutil.rmtree, self.directory, True)
        self.workers = [Worker({"a": "alice"}), Worker({"b": "bob", "d": "dave"}), Worker({"c": "carol"})]
        for index, worker in enumerate(self.workers[1:], start=1):
            answering = WorkerRPCService(worker.dispatcher, worker_socket_path(self.directory, index), reactor)
            answering.startService()
            self.addCleanup(answering.stopService)
            self.assertEqual(os.stat(answering.path).st_mode & 0o777, 0o600)
        self.zero = self.workers[0].dispatcher
        fan_out(self.zero, WorkerPeers(self.directory, 3, reactor), OWNERS.__getitem__)

    def run_method(self, name, *params):
        return self.zero.run(name, list(params))

    @defer.inlineCallbacks
    def test_dump_lists_every_worker(self):
        records = yield self.run_method("uac.reg_dump")
        self.assertEqual([r["l_uuid"] for r in records], ["a", "b", "d", "c"])

    @defer.inlineCallbacks
    def test_info_by_l_uuid_asks_the_owner(self):
        self.assertEqual((yield self.run_method("uac.reg_info", "l_uuid", "c")), {"l_uuid": "c"})
        self.assertEqual((yield self.run_method("uac.reg_info", "l_username", "dave")), {"l_uuid": "d"})
        error = yield self.assertFailure(self.run_method("uac.reg_info", "l_username", "nobody"), RPCError)
        self.assertEqual((error.code, error.message), (404, "Record not found"))

    @defer.inlineCallbacks
    def test_actions_reach_the_worker_that_has_the_account(self):
        yield self.run_method("uac.reg_disable", "l_uuid", "b")
        yield self.run_method("uac.reg_remove", "c")
        yield self.run_method("uac.reg_add", "d", "dave2")
        yield self.run_method("uac.reg_refresh", "a")
        self.assertEqual([w.calls for w in self.workers], [
            [("uac.reg_refresh", "a")],
            [("uac.reg_disable", "l_uuid", "b"), ("uac.reg_add", "d", "dave2")],
            [("uac.reg_remove", "c")]])

    @defer.inlineCallbacks
    def test_reload_and_active_everywhere(self):
        yield self.run_method("uac.reg_reload")
        self.assertEqual([w.calls for w in self.workers], [[("uac.reg_reload",)]] * 3)
        answer = yield self.run_method("uac.reg_active", 0)
        self.assertEqual(answer, {"omode": 1, "nmode": 0})
        self.assertEqual([w.active for w in self.workers], [0, 0, 0])

    @defer.inlineCallbacks
    def test_other_methods_stay_local(self):
        self.assertEqual((yield self.run_method("core.version")), "worker's own")

    @defer.inlineCallbacks
    def test_worker_not_available(self):
        path = worker_socket_path(self.directory, 2)
        os.rename(path, path + ".away")  # as while the worker starts again
        self.addCleanup(os.rename, path + ".away", path)
        error = yield self.assertFailure(self.run_method("uac.reg_dump"), RPCError)
        self.assertEqual((error.code, error.message), (503, "Worker not available"))
        self.assertIn("worker 2", error.data)
