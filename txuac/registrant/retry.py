"""When to try again after a failed REGISTER cycle: the failure's kind and the delay.

Sans-IO: plain values in, seconds out; the caller passes its random generator.

Kinds (docs/differences.rst):

- temporary: 408, 480, 5xx, no answer (timeout), transport and resolution errors,
  a 2xx we cannot use (no or unparsable Contact), and a challenge that did not come
  from the registrar (not answered; whoever sent it must not be able to park the
  account on the forbidden interval). Retried after
  ``reg_retry_interval`` doubled per failure in a row, capped at
  ``reg_retry_max_interval``.
- forbidden: 403 and refused credentials (challenged again after our answer, or
  no challenge we can answer). Retried after ``reg_forbidden_retry_interval``:
  RFC 3261 21.4.4 says not to repeat a 403, so slowly, but never for good.
- fatal: any other final failure (3xx, as we follow no redirection, other 4xx
  including 404 and a run of 423s, 6xx) and a REGISTER we cannot build from the
  row. Retried after ``reg_fatal_retry_interval``.

Every delay gets +-``reg_retry_jitter`` percent so accounts that failed together
do not come back together, and is never below one second. A Retry-After longer
than the delay wins (RFC 3261 20.33). ``reg_retry_interval`` 0 is Kamailio's
rule: no retry at all, the account is disabled on its first failure; a forbidden
or fatal interval of 0 disables the account on failures of that kind only.
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass

from txuac.errors import (
    AuthenticationError,
    ChallengeOriginError,
    ResolutionError,
    TransactionTimeout,
    TransportError,
)

MIN_DELAY = 1.0  # seconds: jitter never brings a retry closer than this
_MAX_DOUBLINGS = 32  # 2**32 times any interval is far beyond any cap


class FailureKind(str, enum.Enum):
    """How a REGISTER cycle failed, as far as retrying is concerned."""

    TEMPORARY = "temporary"
    FORBIDDEN = "forbidden"
    FATAL = "fatal"


# Errors of the layers below that say nothing about the account: try again soon.
_TEMPORARY_ERRORS = (TransactionTimeout, TransportError, ResolutionError)


def classify(status: int | None, error: type[BaseException] | None = None) -> FailureKind:
    """The kind of a failure: the final ``status`` received (None when none was), and the
    ``error`` class the cycle failed with (None when it ended with a final response)."""
    if error is not None and issubclass(error, ChallengeOriginError):
        # Not the registrar refusing us: whoever spoofed the challenge must not be able
        # to park the account on the long forbidden interval.
        return FailureKind.TEMPORARY
    if error is not None and issubclass(error, AuthenticationError):
        return FailureKind.FORBIDDEN
    if error is not None and issubclass(error, _TEMPORARY_ERRORS):
        return FailureKind.TEMPORARY
    if status is None:
        return FailureKind.FATAL  # nothing was sent: the row or its socket needs fixing
    if status == 403 or status in (401, 407):
        return FailureKind.FORBIDDEN
    if 200 <= status < 300 or status in (408, 480) or 500 <= status < 600:
        return FailureKind.TEMPORARY
    return FailureKind.FATAL


@dataclass(frozen=True)
class RetryPolicy:
    """The retry settings (seconds; jitter in percent of the delay)."""

    retry_interval: int = 30
    retry_max_interval: int = 600
    forbidden_retry_interval: int = 1800
    fatal_retry_interval: int = 3600
    jitter: int = 20

    def disables(self, kind: FailureKind) -> bool:
        """Whether a failure of ``kind`` disables the account instead of retrying it:
        always with Kamailio's reg_retry_interval 0, else when that kind's interval is 0."""
        if self.retry_interval <= 0:
            return True
        if kind is FailureKind.FORBIDDEN:
            return self.forbidden_retry_interval <= 0
        return kind is FailureKind.FATAL and self.fatal_retry_interval <= 0

    def base(self, kind: FailureKind, failures_in_a_row: int) -> float:
        """The delay before jitter; ``failures_in_a_row`` counts this failure (1 for the first)."""
        if kind is FailureKind.FORBIDDEN:
            return float(self.forbidden_retry_interval)
        if kind is FailureKind.FATAL:
            return float(self.fatal_retry_interval)
        doublings = min(max(failures_in_a_row - 1, 0), _MAX_DOUBLINGS)
        # The cap is never below the first interval, whatever reg_retry_max_interval says.
        cap = max(self.retry_max_interval, self.retry_interval)
        return float(min(self.retry_interval * 2 ** doublings, cap))

    def delay(self, kind: FailureKind, failures_in_a_row: int, retry_after: int | None,
              rng: random.Random) -> float | None:
        """Seconds until the next REGISTER: the jittered base, or Retry-After when longer;
        None when the account is to be disabled instead."""
        if self.disables(kind):
            return None
        base = self.base(kind, failures_in_a_row)
        spread = base * self.jitter / 100.0
        delay = max(base + rng.uniform(-spread, spread), MIN_DELAY)
        if retry_after is not None and retry_after > delay:
            return float(retry_after)
        return delay
