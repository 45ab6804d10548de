"""The MariaDB test server itself: it starts, takes its user's password over TCP and the
socket, keeps its data across a restart, and leaves nothing running."""

from __future__ import annotations

import os

import pymysql
from twisted.trial.unittest import TestCase

from tests.support.mariadb import DEFAULT_PASSWORD, MariaDBError, MariaDBServer


class MariaDBServerTests(TestCase):
    timeout = 60

    def connect(self, server: MariaDBServer, **kwargs):
        arguments = {"user": server.user, "password": server.password, "database": server.database,
                     "charset": "utf8mb4", "connect_timeout": 5}
        if "unix_socket" not in kwargs:
            arguments.update(host=server.host, port=server.port)
        connection = pymysql.connect(**arguments, **kwargs)
        self.addCleanup(connection.close)
        return connection

    def test_user_with_password_over_tcp_and_socket(self):
        server = MariaDBServer(self)
        self.assertTrue(":" in DEFAULT_PASSWORD and "@" in DEFAULT_PASSWORD)
        self.assertEqual(server.url, f"mysql://txuac:{DEFAULT_PASSWORD}@127.0.0.1:{server.port}/txuac")
        for connection in (self.connect(server), self.connect(server, unix_socket=server.socket)):
            with connection.cursor() as cursor:
                cursor.execute("SELECT DATABASE(), @@character_set_database")
                self.assertEqual(cursor.fetchone(), ("txuac", "utf8mb4"))
        with self.assertRaises(pymysql.err.OperationalError) as caught:
            pymysql.connect(host=server.host, port=server.port, user=server.user, password="wrong",
                            database=server.database, connect_timeout=5)
        self.assertEqual(caught.exception.args[0], 1045)  # access denied

    def test_data_survives_a_restart(self):
        server = MariaDBServer(self)
        server.mysql("CREATE TABLE t (v VARCHAR(8)); INSERT INTO t VALUES ('kept')")
        pid = server.pid
        server.stop()
        self.assertFalse(server.running())
        self.assertFalse(server.ready())
        with self.assertRaises(MariaDBError):
            server.mysql("SELECT 1")
        server.start()
        self.assertNotEqual(server.pid, pid)
        self.assertEqual(server.mysql("SELECT v FROM t"), "kept")

    def test_other_database_and_user(self):
        server = MariaDBServer(self, database="kamailio", user="kamailio", password="kamailiorw")
        self.assertEqual(server.url, f"mysql://kamailio:kamailiorw@127.0.0.1:{server.port}/kamailio")
        with self.connect(server).cursor() as cursor:
            cursor.execute("SELECT DATABASE()")
            self.assertEqual(cursor.fetchone(), ("kamailio",))

    def test_cleanup_removes_everything(self):
        server = MariaDBServer(self)
        pid, directory = server.pid, server.directory
        server._cleanup()
        self.assertFalse(os.path.exists(directory))
        with self.assertRaises(ProcessLookupError):
            os.kill(pid, 0)
