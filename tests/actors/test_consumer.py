"""The consumer's pure policy, without NATS or Ray (faults: test_poison, test_chaos)."""

from __future__ import annotations

from actors.consumer import backoff_s


def test_redelivery_delays_double_from_half_a_second_up_to_thirty() -> None:
    delays = [backoff_s(n) for n in range(1, 10)]
    assert delays[:4] == [0.5, 1.0, 2.0, 4.0]
    assert delays == sorted(delays)  # never shorter than the one before
    assert max(delays) == 30.0 == backoff_s(1_000)
    assert backoff_s(0) == 0.5  # a first delivery that failed
