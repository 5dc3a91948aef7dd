"""When to retry a registry request: transient statuses, bounded attempts and time, backoff and Retry-After."""
from __future__ import annotations

import email.utils
import time
from dataclasses import dataclass
from typing import Callable, Optional


def is_transient_status(status: int) -> bool:
    """429 (too many requests) and 5xx other than 501/505, which will not change on a retry."""
    return status == 429 or (500 <= status < 600 and status not in (501, 505))


def parse_retry_after(value: Optional[str], now: float) -> Optional[float]:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date); None if absent or bad.

    `now` is the current time in seconds since the epoch (for the date form).
    """
    if value is None:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - now)


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to retry a transient failure (connection reset, timeout, 429, 5xx)."""

    attempts: int = 5  # tries in all, the first one included
    base_delay: float = 0.5  # the first backoff; it doubles per failure ...
    max_delay: float = 8.0  # ... up to this
    retry_after_cap: float = 30.0  # a server's Retry-After is honoured up to this many seconds
    window: float = 120.0  # no retry starts later than this after the first failure

    def delay(self, failures: int, retry_after: Optional[float] = None) -> float:
        """Seconds to wait after the `failures`-th failure (1-based)."""
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.retry_after_cap)
        return min(self.max_delay, self.base_delay * (2 ** max(failures - 1, 0)))

    def allows(self, failures: int, waited_so_far: float, next_delay: float) -> bool:
        """Whether another attempt may start after `failures` failures, `waited_so_far` seconds into them."""
        return failures < self.attempts and waited_so_far + next_delay <= self.window


NO_RETRY = RetryPolicy(attempts=1)


class Attempts:
    """The retry state of one operation: call `failed()` after each transient failure; it sleeps or says stop."""

    def __init__(self, policy: RetryPolicy, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self._policy = policy
        self._clock = clock
        self._sleep = sleep
        self._failures = 0
        self._first: Optional[float] = None

    @property
    def failures(self) -> int:
        return self._failures

    def failed(self, retry_after: Optional[float] = None) -> bool:
        """Record a transient failure; sleep and return True if another attempt may start, else False."""
        now = self._clock()
        if self._first is None:
            self._first = now
        self._failures += 1
        delay = self._policy.delay(self._failures, retry_after)
        if not self._policy.allows(self._failures, now - self._first, delay):
            return False
        self._sleep(delay)
        return True
