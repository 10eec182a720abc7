"""The retry policy of a carrier call against the Jasper simulator over HTTP: one record per attempt,
one re-authentication on 401, a refusal never sent again, a 429 retried after its Retry-After."""
import pytest

from bulkchange.carriers.base import AuthError, CallLog, PermanentError, TransientError
from bulkchange.carriers.jasper import JasperClient
from bulkchange.engine import CallPolicy, RateLimiter, RetryPolicy
from tests.integration.conftest import KEY


def _client(simulator, key, attempts=4, limiter=None):
    policy = CallPolicy(limiter or RateLimiter(None), RetryPolicy(max_attempts=attempts, base_delay=0.01, max_delay=1))
    return JasperClient(simulator.url_for("jasper"), "acct", key, policy=policy)


def _calls(jasper, iccid):
    return [c["status"] for c in jasper.calls(iccid=iccid)]


def test_a_refused_key_is_sent_once_more_after_one_reauthentication_then_raised(simulator, fleet_factory, jasper):
    iccid = fleet_factory(1).iccids[0]
    client = _client(simulator, "not-the-key")
    log = CallLog()
    try:
        with pytest.raises(AuthError) as err:
            client.get_device(iccid, log=log)
    finally:
        client.close()
    assert _calls(jasper, iccid) == [401, 401]  # one re-authentication, never a third try
    assert [(r.attempt, r.status_code, r.outcome) for r in log.records] == [(1, 401, "refused"), (2, 401, "refused")]
    assert err.value.attempts == 2 and "not-the-key" not in str(err.value)


def test_a_refusal_is_never_sent_again(simulator, fleet_factory, jasper):
    fleet = fleet_factory(1)
    client = _client(simulator, KEY)
    log = CallLog()
    try:
        with pytest.raises(PermanentError):
            client.edit_device(fleet.iccids[0], {"ratePlan": "NO-SUCH-PLAN"}, description="Edit Device Details",
                               log=log)
    finally:
        client.close()
    assert [c["status"] for c in jasper.calls(iccid=fleet.iccids[0], method="PUT")] == [400]
    assert [(r.attempt, r.outcome) for r in log.records] == [(1, "refused")]


def test_a_429_is_retried_and_every_attempt_has_its_record(simulator, fleet_factory, jasper):
    fleet = fleet_factory(1)
    jasper.configure(error_rate=1.0, error_statuses=[429], fault_methods=["GET"])
    client = _client(simulator, KEY, attempts=3)
    client.policy.retry.rate_limited_waits = 2  # two 429s waited out, then three attempts
    log = CallLog()
    try:
        with pytest.raises(TransientError) as err:
            client.get_device(fleet.iccids[0], log=log)
    finally:
        client.close()
    assert _calls(jasper, fleet.iccids[0]) == [429] * 5
    assert [(r.attempt, r.status_code, r.outcome) for r in log.records] == [(n, 429, "refused") for n in range(1, 6)]
    assert err.value.attempts == 5 and any("5 attempt" in n for n in err.value.__notes__)


class _Order:
    """Records, in order, when an attempt is journaled, when it gets its slot and when it is sent."""

    def __init__(self, jasper):
        self.events, self.jasper = [], jasper

    def limiter(self):
        events = self.events

        class Limiter(RateLimiter):
            def acquire(self):
                waited = super().acquire()
                events.append("slot")
                return waited
        return Limiter(None)

    def log(self):
        events, jasper = self.events, self.jasper

        class Log(CallLog):
            def begin(self, record):
                events.append(f"journal {record.attempt}")
                super().begin(record)

            def add(self, record):
                events.append(f"sent {record.attempt}: {record.status_code}")
                super().add(record)
        return Log()


def test_an_attempt_is_journaled_before_it_waits_for_its_slot(simulator, fleet_factory, jasper):
    """The journal's commit is not between the slot and the request: a request that leaves late
    leaves bunched with the next slot's, and the carrier counts both in one second."""
    fleet = fleet_factory(1)
    jasper.configure(fail_iccids={fleet.iccids[0]: 429})
    order = _Order(jasper)
    client = _client(simulator, KEY, attempts=2, limiter=order.limiter())
    client.policy.retry.rate_limited_waits = 1
    try:
        with pytest.raises(TransientError):
            client.update_status(fleet.iccids[0], "DEACTIVATED", log=order.log())
    finally:
        client.close()
    assert order.events == ["journal 1", "slot", "sent 1: 429", "journal 2", "slot", "sent 2: 429",
                            "journal 3", "slot", "sent 3: 429"]


def test_a_resend_after_an_unknown_outcome_is_journaled_after_the_check(simulator, fleet_factory, jasper):
    """After an attempt whose outcome is unknown the device is checked first; the check may find
    the change in, and then nothing is sent: the resend is journaled only once the check said no."""
    fleet = fleet_factory(1)
    jasper.configure(error_rate=1.0, error_statuses=[503], fault_methods=["PUT"])
    order = _Order(jasper)
    client = _client(simulator, KEY, attempts=2, limiter=order.limiter())
    try:
        with pytest.raises(TransientError):
            client.update_status(fleet.iccids[0], "DEACTIVATED", log=order.log())
    finally:
        client.close()
    # attempt 1 (503: unknown), its slot; then attempt 2's slot, the check (a GET: its own journal
    # row, slot, answer), and only then attempt 2's row; after it, the last check
    assert order.events[:3] == ["journal 1", "slot", "sent 1: 503"]
    assert order.events[3:9] == ["slot", "journal 1", "slot", "sent 1: 200", "journal 2", "sent 2: 503"]
