"""txuac.registrant.record: a uacreg row validated as Kamailio does (K:uac_reg.c uac_reg_db_to_reg).

Reference: kamailio-uac-behaviour.md 4.4 (flags), 4.5 (loading), 4.9 (status) and 5 (the table).
"""

from __future__ import annotations

import random

from twisted.trial.unittest import SynchronousTestCase

from tests.support.accounts import HA1, make_record, make_row
from tests.support.bad_rows import BAD_VALUES
from txuac.registrant.record import MANDATORY, Flag, InvalidRecord, State, record_from_row, source_address
from txuac.registrant.row_rules import COLUMN_SIZES
from txuac.registrant.store import sqlite


class MandatoryColumnsTests(SynchronousTestCase):
    """Kamailio skips a row when any of the seven mandatory columns is empty."""

    def test_the_seven_mandatory_columns(self):
        self.assertEqual(set(MANDATORY), {"l_uuid", "l_username", "l_domain", "r_username", "r_domain",
                                          "auth_username", "auth_proxy"})

    def test_each_empty_mandatory_column_is_named(self):
        for name in MANDATORY:
            for empty in ("", None, "   "):
                with self.subTest(column=name, value=empty):
                    e = self.assertRaises(InvalidRecord, record_from_row, make_row(**{name: empty}), 0.0)
                    self.assertIn(name, str(e))

    def test_missing_mandatory_column_is_named(self):
        for name in MANDATORY:
            row = make_row()
            del row[name]
            e = self.assertRaises(InvalidRecord, record_from_row, row, 0.0)
            self.assertIn(name, str(e))

    def test_optional_columns_may_be_empty(self):
        record = record_from_row(make_row(realm="", contact_addr="", socket="", contact_user=""), 0.0)
        self.assertEqual((record.realm, record.contact_addr, record.socket, record.contact_user), ("", "", "", ""))

    def test_a_bad_socket_is_an_invalid_record(self):
        e = self.assertRaises(InvalidRecord, source_address, "udp:pbx.example.com:5060")
        self.assertIn("socket: ", str(e))

    def test_bytes_values_are_decoded(self):
        record = record_from_row(make_row(l_uuid=b"acc-bytes", r_domain=b"sip.example.org"), 0.0)
        self.assertEqual(record.l_uuid, "acc-bytes")
        self.assertEqual(record.r_domain, "sip.example.org")


class SecretTests(SynchronousTestCase):
    def test_neither_password_nor_ha1(self):
        e = self.assertRaises(InvalidRecord, record_from_row, make_row(auth_password="", auth_ha1=""), 0.0)
        self.assertIn("auth_password", str(e))
        self.assertIn("auth_ha1", str(e))

    def test_neither_password_nor_ha1_none(self):
        self.assertRaises(InvalidRecord, record_from_row, make_row(auth_password=None, auth_ha1=None), 0.0)

    def test_password_only(self):
        record = record_from_row(make_row(auth_password="pw", auth_ha1=""), 0.0)
        self.assertEqual((record.auth_password, record.auth_ha1), ("pw", ""))

    def test_ha1_only(self):
        record = record_from_row(make_row(auth_password="", auth_ha1=HA1), 0.0)
        self.assertEqual(record.auth_ha1, HA1)

    def test_ha1_not_32_hex(self):
        for bad in (HA1[:31], HA1 + "0", "g" * 32, "0123456789abcdef" * 4, HA1[:30] + " x"):
            with self.subTest(ha1=bad):
                e = self.assertRaises(InvalidRecord, record_from_row, make_row(auth_ha1=bad), 0.0)
                self.assertIn("auth_ha1", str(e))

    def test_ha1_not_hex_even_with_password(self):
        """A bad HA1 is refused even when a password would do (Kamailio checks the HA1 when set)."""
        self.assertRaises(InvalidRecord, record_from_row, make_row(auth_password="pw", auth_ha1="z" * 32), 0.0)

    def test_ha1_is_lower_cased(self):
        record = record_from_row(make_row(auth_password="", auth_ha1=HA1.upper()), 0.0)
        self.assertEqual(record.auth_ha1, HA1)


class NumberTests(SynchronousTestCase):
    def test_numbers_from_strings(self):
        record = record_from_row(make_row(expires="600", flags="0", reg_delay="7"), 100.0)
        self.assertEqual((record.expires, record.reg_delay), (600, 7))

    def test_empty_numbers_are_zero(self):
        record = record_from_row(make_row(expires="", flags=None, reg_delay=None), 0.0)
        self.assertEqual((record.expires, record.flags, record.reg_delay), (0, 0, 0))

    def test_not_an_integer(self):
        for name in ("expires", "flags", "reg_delay"):
            with self.subTest(column=name):
                e = self.assertRaises(InvalidRecord, record_from_row, make_row(**{name: "ten"}), 0.0)
                self.assertIn(name, str(e))

    def test_negative_expires_or_delay(self):
        self.assertRaises(InvalidRecord, record_from_row, make_row(expires=-1), 0.0)
        self.assertRaises(InvalidRecord, record_from_row, make_row(reg_delay=-5), 0.0)

    def test_expires_zero_loads_but_never_registers(self):
        record = record_from_row(make_row(expires=0), 0.0)
        self.assertEqual(record.expires, 0)
        self.assertEqual(record.state(0.0), State.UNREGISTERED)

    def test_a_loaded_record_starts_with_no_state(self):
        """Every field is set by the written-out __init__ (repr reads them all) and the
        state is that of an account never sent: nothing learnt, nothing failed."""
        record = record_from_row(make_row(expires=600, flags=Flag.DISABLED | Flag.ONLINE), 7.0)
        self.assertIn("stale_contacts=()", repr(record))
        self.assertEqual((record.expires, record.table_expires, record.flags, record.table_disabled),
                         (600, 600, Flag.DISABLED, True))
        self.assertEqual((record.sent_at, record.expires_at, record.call_id, record.cseq, record.failures,
                          record.last_status, record.last_failure), (None, None, None, 0, 0, None, None))
        self.assertEqual((record.path, record.service_route, record.pub_gruu, record.temp_gruu,
                          record.flow_timer), ((), (), None, None, None))
        self.assertEqual((record.user_agent, record.extra_headers, record.from_username, record.outbound,
                          record.instance_id, record.reg_id, record.options_ping), ("", (), "", False, "", 1, False))
        self.assertEqual(record, record_from_row(make_row(expires=600, flags=Flag.DISABLED | Flag.ONLINE), 7.0))


class DelayTests(SynchronousTestCase):
    def test_reg_delay_sets_due_time(self):
        record = record_from_row(make_row(reg_delay=30), 1000.0)
        self.assertEqual(record.loaded_at, 1000.0)
        self.assertEqual(record.reg_delay, 30)
        self.assertEqual(record.due_at, 1030.0)

    def test_no_delay_is_due_at_load(self):
        record = record_from_row(make_row(reg_delay=0), 50.0)
        self.assertEqual(record.due_at, 50.0)

    def test_random_delay_drawn_in_range_with_seeded_rng(self):
        rng = random.Random(1234)
        expected_rng = random.Random(1234)
        seen = set()
        for i in range(200):
            record = record_from_row(make_row(f"a{i}", reg_delay=0), 10.0, reg_random_delay=20, rng=rng)
            self.assertEqual(record.reg_delay, expected_rng.randrange(20))
            self.assertTrue(0 <= record.reg_delay < 20)
            self.assertEqual(record.due_at, 10.0 + record.reg_delay)
            seen.add(record.reg_delay)
        self.assertGreater(len(seen), 10)  # actually random, not a constant

    def test_random_delay_is_reproducible(self):
        delays = [[record_from_row(make_row(f"a{i}"), 0.0, 60, rng).reg_delay for i in range(20)]
                  for rng in (random.Random(7), random.Random(7))]
        self.assertEqual(delays[0], delays[1])

    def test_explicit_reg_delay_wins_over_random(self):
        rng = random.Random(1)
        record = record_from_row(make_row(reg_delay=5), 0.0, reg_random_delay=100, rng=rng)
        self.assertEqual(record.reg_delay, 5)

    def test_no_random_delay_without_setting(self):
        record = record_from_row(make_row(reg_delay=0), 0.0, reg_random_delay=0, rng=random.Random(3))
        self.assertEqual(record.reg_delay, 0)

    def test_random_delay_of_one_is_zero(self):
        record = record_from_row(make_row(reg_delay=0), 0.0, reg_random_delay=1, rng=random.Random(3))
        self.assertEqual(record.reg_delay, 0)


class FlagTests(SynchronousTestCase):
    def test_flag_values_are_kamailios(self):
        self.assertEqual((Flag.DISABLED, Flag.ONGOING, Flag.ONLINE, Flag.AUTHSENT, Flag.INIT), (1, 2, 4, 8, 16))

    def test_only_disabled_kept_from_stored_flags(self):
        for stored, expected in ((0, 0), (1, Flag.DISABLED), (2, 0), (4, 0), (8, 0),
                                 (16, 0), (31, Flag.DISABLED), (6, 0), (5, Flag.DISABLED)):
            with self.subTest(flags=stored):
                record = record_from_row(make_row(flags=stored), 0.0)
                self.assertEqual(record.flags, expected)

    def test_stored_online_does_not_make_it_registered(self):
        record = record_from_row(make_row(flags=int(Flag.ONLINE | Flag.ONGOING)), 0.0)
        self.assertEqual(record.status(0.0), -99)
        self.assertEqual(record.state(0.0), State.WAITING)

    def test_stored_disabled_loads_disabled(self):
        record = record_from_row(make_row(flags=1), 0.0)
        self.assertEqual(record.state(0.0), State.DISABLED)
        self.assertEqual(record.status(0.0), -3)


class StatusAndStateTests(SynchronousTestCase):
    """uac_reg_status order (4.9): registered 1, ongoing -2, disabled -3, else -99."""

    def test_fresh_record(self):
        record = make_record()
        self.assertEqual(record.status(0.0), -99)
        self.assertEqual(record.state(0.0), State.WAITING)
        self.assertFalse(record.registered(0.0))

    def test_online_until_expiry(self):
        record = make_record()
        record.flags = Flag.ONLINE
        record.expires_at = 100.0
        self.assertTrue(record.registered(99.9))
        self.assertEqual(record.status(99.9), 1)
        self.assertEqual(record.state(99.9), State.ONLINE)
        self.assertFalse(record.registered(100.0))
        self.assertEqual(record.status(100.0), -99)

    def test_online_wins_over_ongoing_for_status(self):
        record = make_record()
        record.flags = Flag.ONLINE | Flag.ONGOING
        record.expires_at = 100.0
        self.assertEqual(record.status(50.0), 1)
        self.assertEqual(record.state(50.0), State.REGISTERING)

    def test_ongoing_wins_over_disabled(self):
        record = make_record()
        record.flags = Flag.ONGOING | Flag.DISABLED
        self.assertEqual(record.status(0.0), -2)

    def test_disabled(self):
        record = make_record()
        record.flags = Flag.DISABLED
        self.assertEqual(record.status(0.0), -3)
        self.assertEqual(record.state(0.0), State.DISABLED)

    def test_failed(self):
        record = make_record()
        record.last_failure = "403 Forbidden"
        self.assertEqual(record.state(0.0), State.FAILED)
        self.assertEqual(record.status(0.0), -99)

    def test_addresses(self):
        record = make_record(r_username="bob", r_domain="voip.example.net", l_username="100",
                             l_domain="pbx.local")
        self.assertEqual(record.aor, "sip:bob@voip.example.net")
        self.assertEqual(record.local_uri, "sip:100@pbx.local")


class RowRulesTests(SynchronousTestCase):
    """Every column as Kamailio's schema sizes it and as SIP will read it: a bad value is
    refused naming its column, whatever the column."""

    def test_bad_values_are_refused_naming_the_column(self):
        for column, value, reason in BAD_VALUES:
            with self.subTest(column=column, value=value):
                e = self.assertRaises(InvalidRecord, record_from_row, make_row(**{column: value}), 0.0)
                self.assertEqual(e.field, column)
                self.assertTrue(str(e).startswith(f"invalid {column}: "), str(e))
                self.assertIn(reason, str(e))

    def test_values_at_the_limits_load(self):
        record = record_from_row(make_row(
            "u" * 64, l_username="l" * 64, r_username="r" * 64, auth_username="a" * 64, auth_password="p" * 64,
            expires=2**31 - 1, flags=2**31 - 1, reg_delay=2**31 - 1, contact_user="c" * 255,
            auth_proxy="sips:proxy.example.com:5061;transport=tls", contact_addr="[2001:db8::1]:5080",
            socket="tcp:[::1]:5060", realm="Realm of 'x' & y"), 0.0)
        self.assertEqual((record.expires, record.contact_user), (2**31 - 1, "c" * 255))

    def test_user_parts_follow_rfc_3261(self):
        """user = 1*(unreserved / escaped / user-unreserved): ';', '?' and escapes are allowed."""
        record = record_from_row(make_row("uuid-1", r_username="+1%20555;isub=1", contact_user="a&b=c$d,e?f/g"), 0.0)
        self.assertEqual(record.r_username, "+1%20555;isub=1")
        for bad in ("a%zz", "a:b", "é", "a<b>"):
            with self.subTest(bad=bad):
                e = self.assertRaises(InvalidRecord, record_from_row, make_row(contact_user=bad), 0.0)
                self.assertEqual(e.field, "contact_user")

    def test_a_repeating_value_is_judged_the_same_every_time(self):
        """Domains, proxies and sockets are checked once per value; a bad one stays refused."""
        for _ in range(3):
            e = self.assertRaises(InvalidRecord, record_from_row, make_row(r_domain="bad domain.example"), 0.0)
            self.assertEqual(e.field, "r_domain")
            self.assertEqual(record_from_row(make_row(r_domain="good.example"), 0.0).r_domain, "good.example")

    def test_surrounding_spaces_are_trimmed_but_not_line_breaks(self):
        self.assertEqual(record_from_row(make_row(contact_addr=" 192.0.2.1:5060\t"), 0.0).contact_addr,
                         "192.0.2.1:5060")
        e = self.assertRaises(InvalidRecord, record_from_row, make_row(auth_proxy="sip:proxy.example.com\r\n"), 0.0)
        self.assertEqual(e.field, "auth_proxy")

    def test_sizes_are_kamailios(self):
        """The sizes are those of the uacreg table txuac creates (its copy of uac-create.sql)."""
        schema = sqlite.SCHEMA
        for column, size in COLUMN_SIZES.items():
            with self.subTest(column=column):
                self.assertIn(f"    {column} VARCHAR({size}) DEFAULT '' NOT NULL,", schema)
