"""Tests of the retry policy: transient statuses, Retry-After, backoff, bounds by count and by time."""
from __future__ import annotations

import email.utils

import pytest

from lamina.registry.retry import Attempts, RetryPolicy, is_transient_status, parse_retry_after


@pytest.mark.parametrize("status, transient", [
    (429, True), (500, True), (502, True), (503, True), (504, True), (501, False), (505, False),
    (400, False), (401, False), (404, False), (200, False)])
def test_transient_statuses(status: int, transient: bool) -> None:
    assert is_transient_status(status) is transient


def test_retry_after_forms() -> None:
    now = 1_700_000_000.0
    assert parse_retry_after("7", now) == 7.0
    assert parse_retry_after(" 0 ", now) == 0.0
    assert parse_retry_after(email.utils.formatdate(now + 12, usegmt=True), now) == pytest.approx(12.0)
    assert parse_retry_after(email.utils.formatdate(now - 50, usegmt=True), now) == 0.0
    assert parse_retry_after("soon", now) is None
    assert parse_retry_after("-3", now) is None
    assert parse_retry_after(None, now) is None


def test_backoff_doubles_up_to_the_cap_and_retry_after_is_capped() -> None:
    policy = RetryPolicy(base_delay=0.5, max_delay=3.0, retry_after_cap=10.0)
    assert [policy.delay(n) for n in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    assert policy.delay(1, retry_after=4.0) == 4.0
    assert policy.delay(1, retry_after=600.0) == 10.0


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def time(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_attempts_are_bounded_by_count() -> None:
    clock = _Clock()
    attempts = Attempts(RetryPolicy(attempts=4, base_delay=1.0, max_delay=100.0, window=1000.0), clock.time, clock.sleep)
    assert [attempts.failed() for _ in range(4)] == [True, True, True, False]
    assert clock.slept == [1.0, 2.0, 4.0]
    assert attempts.failures == 4


def test_attempts_are_bounded_by_time() -> None:
    clock = _Clock()
    attempts = Attempts(RetryPolicy(attempts=100, base_delay=1.0, max_delay=4.0, window=10.0), clock.time, clock.sleep)
    results = []
    while True:
        clock.now += 0.5  # each attempt itself takes time too
        if not attempts.failed():
            break
        results.append(clock.now)
    assert clock.slept == [1.0, 2.0, 4.0]  # a fourth wait would end past the 10 s window
    assert clock.now <= 10.0 + 0.5


def test_server_retry_after_is_what_is_slept() -> None:
    clock = _Clock()
    attempts = Attempts(RetryPolicy(retry_after_cap=5.0), clock.time, clock.sleep)
    assert attempts.failed(retry_after=3.0) and attempts.failed(retry_after=60.0)
    assert clock.slept == [3.0, 5.0]
