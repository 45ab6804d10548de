"""SIPStack provides ISIPStack, the interface its callers are written against."""

from __future__ import annotations

from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyClass, verifyObject

from txuac.net.interfaces import ISIPStack
from txuac.net.stack import SIPStack
from txuac.sip.address import Address


class SIPStackInterfaceTests(SynchronousTestCase):
    def test_sipstack_provides_isipstack(self) -> None:
        self.assertTrue(verifyClass(ISIPStack, SIPStack))
        self.assertTrue(verifyObject(ISIPStack, SIPStack(MemoryReactorClock())))

    def test_set_keepalive_interval_reaches_the_pool(self) -> None:
        """The registrant sets a registrar's Flow-Timer through the stack, not its pool."""
        stack = SIPStack(MemoryReactorClock())
        peer = Address("tcp", "192.0.2.1", 5060)
        stack.set_keepalive_interval(peer, 25)
        self.assertEqual(stack.pool._flow_intervals, {("tcp", "192.0.2.1", 5060): 25.0})
        stack.set_keepalive_interval(peer, None)
        self.assertEqual(stack.pool._flow_intervals, {})
