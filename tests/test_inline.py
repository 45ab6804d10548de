"""txuac.inline.inline_callbacks: inlineCallbacks that also drives generators mypyc made."""

from __future__ import annotations

from twisted.internet import defer
from twisted.trial.unittest import SynchronousTestCase

from txuac.inline import inline_callbacks


class Steps:
    """A generator object that is not a types.GeneratorType, as a compiled one is not."""

    def __init__(self, inner):
        self.inner = inner

    def __iter__(self):
        return self

    def __next__(self):
        return self.inner.send(None)

    def send(self, value):
        return self.inner.send(value)

    def throw(self, *args):
        return self.inner.throw(*args)

    def close(self):
        self.inner.close()


class InlineCallbacksTests(SynchronousTestCase):
    def test_a_generator_that_is_not_a_generator_type_is_driven(self):
        waiting = defer.Deferred()

        def steps(x):
            y = yield waiting
            return x + y

        with self.assertRaises(TypeError):  # what inline_callbacks is for
            defer.inlineCallbacks(lambda: Steps(steps(1)))()
        d = inline_callbacks(lambda x: Steps(steps(x)))(1)
        self.assertNoResult(d)
        waiting.callback(2)
        self.assertEqual(self.successResultOf(d), 3)

    def test_a_failure_is_thrown_into_the_generator(self):
        caught = []

        def steps():
            try:
                yield defer.fail(ValueError("no"))
            except ValueError as e:
                caught.append(str(e))
            yield defer.fail(KeyError("out"))

        d = inline_callbacks(lambda: Steps(steps()))()
        self.failureResultOf(d, KeyError)
        self.assertEqual(caught, ["no"])

    def test_the_function_keeps_its_name(self):
        def reload(self):
            yield defer.succeed(None)

        self.assertEqual(inline_callbacks(reload).__name__, "reload")
