"""Random tokens drawn a page of system randomness at a time."""

import os

from twisted.trial import unittest

from txuac.sip import tokens
from txuac.sip.tokens import TokenSource, token_hex


class TokenSourceTests(unittest.TestCase):
    def test_length_and_alphabet(self):
        for nbytes in (1, 6, 12, 16, 32):
            value = token_hex(nbytes)
            self.assertEqual(len(value), 2 * nbytes)
            self.assertTrue(set(value) <= set("0123456789abcdef"), value)

    def test_tokens_do_not_repeat_across_refills(self):
        source = TokenSource()
        values = [source.hex(16) for _ in range(3 * 4096 // 16 + 7)]  # several pages
        self.assertEqual(len(set(values)), len(values))

    def test_larger_than_a_page(self):
        self.assertEqual(len(TokenSource().hex(5000)), 10000)

    def test_forget_draws_fresh_bytes(self):
        source = TokenSource()
        first = source.hex(8)
        source.forget()
        self.assertNotEqual(source.hex(8), first)

    def test_forked_child_does_not_repeat_the_parent(self):
        token_hex(8)  # the pool is filled now
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            os.write(write, token_hex(8).encode())
            os._exit(0)
        os.close(write)
        child = os.read(read, 64).decode()
        os.close(read)
        os.waitpid(pid, 0)
        self.assertNotEqual(child, token_hex(8))
        self.assertEqual(len(child), 16)

    def test_module_source_is_shared(self):
        self.assertIsInstance(tokens._SOURCE, TokenSource)
