"""ThingSpace under faults, over real HTTP against the simulator: logins with their own retries and
a shared token cache, actions never re-sent after a lost answer, refusals that say "already there"."""
from collections import Counter

import pytest
from sqlalchemy import select

from bulkchange.carriers.thingspace import ThingSpaceClient, UnknownOutcome
from bulkchange.db import bulk_changes, device_changes as device_changes_db
from bulkchange.db import schema as t
from bulkchange.engine import CallPolicy, RateLimiter, RetryPolicy
from tests.integration.test_thingspace_status_update import (  # noqa: F401 - fixtures
    ACCOUNT,
    SECRETS,
    bulk,
    make_fleet,
    process,
    settle_until_done,
    ts,
)


def client_for(simulator, attempts=4):
    policy = CallPolicy(RateLimiter(None), RetryPolicy(max_attempts=attempts, base_delay=0.02, max_delay=0.2))
    client = ThingSpaceClient(simulator.url_for("thingspace"), "ts-key", SECRETS[0], "ts-user", SECRETS[1], ACCOUNT,
                              policy=policy, timeout=10)
    client.login_backoff_s = 0.01
    return client


@pytest.fixture
def clients(simulator):
    made = []

    def make(**kw):
        made.append(client_for(simulator, **kw))
        return made[-1]

    yield make
    for c in made:
        c.close()


def calls(ts, path_end, method="POST"):
    return [c for c in ts.calls(method=method) if c["path"].endswith(path_end)]


def device_changes(engine, bulk_id):
    with engine.connect() as conn:
        b = bulk_changes.load_bulk_change(conn, bulk_id)
        return {dc.iccid: dc for dc in device_changes_db.load_device_changes(conn, b)}, b


# --- item 3: authentication apart from the action's attempts -------------------------------------
@pytest.mark.parametrize("fault", [{"malformed_rate": 1.0}, {"error_rate": 1.0, "error_statuses": [502]}])
def test_a_garbled_or_failed_login_answer_is_retried(amop_engine, ts, clients, fault):
    iccids = make_fleet(amop_engine, ts, 1, "active")
    client = clients(attempts=1)
    ts.configure(**fault)
    client._login_sleep = lambda s: ts.configure(malformed_rate=0.0, error_rate=0.0)  # the carrier recovers
    assert client.get_device(iccids[0])["carrierInformations"][0]["state"] == "active"
    assert len(calls(ts, "/oauth2/token")) == 2  # the garbled/502 one, then its retry


def test_a_login_hiccup_costs_the_action_no_attempt(amop_engine, ts, clients):
    iccids = make_fleet(amop_engine, ts, 3, "active")
    client = clients(attempts=1)  # one attempt for the action: a login failure must not use it
    ts.configure(error_rate=1.0, error_statuses=[503])
    client._login_sleep = lambda s: ts.configure(error_rate=0.0)
    assert client.action("suspend", iccids)
    assert len(calls(ts, "/actions/suspend")) == 1


def test_tokens_are_shared_by_the_clients_of_a_process_and_renewed_once_on_401(amop_engine, ts, clients, simulator):
    iccids = make_fleet(amop_engine, ts, 2, "active")
    first, second = clients(), clients()
    first.get_device(iccids[0])
    second.get_device(iccids[1])
    assert len(calls(ts, "/oauth2/token")) == 1 and len(calls(ts, "/session/login")) == 1
    simulator.control("thingspace").request("POST", "/expire-tokens")
    second.get_device(iccids[0])
    first.get_device(iccids[1])
    assert len(calls(ts, "/oauth2/token")) == 2 and len(calls(ts, "/session/login")) == 2
    assert "_TokenPair(***)" == repr(__import__("bulkchange.carriers.thingspace", fromlist=["_TOKENS"])
                                     ._TOKENS.peek(first._cache_key()))


# --- item 1: no blind re-send -----------------------------------------------------------------
def test_an_action_applied_but_answered_502_is_adopted_never_resent(amop_engine, ts, clients):
    iccids = make_fleet(amop_engine, ts, 6, "active")
    client = clients()
    client.get_device(iccids[0])  # logged in before the gateway starts losing answers
    ts.configure(applied_error_rate=1.0)
    bulk_id = bulk(amop_engine, iccids, "Suspend")
    summary = process(amop_engine, bulk_id, client)
    assert summary["counts"] == {"PENDING_CARRIER": 6}
    assert len(calls(ts, "/actions/suspend")) == 1  # not re-sent after the lost answer
    ts.configure(applied_error_rate=0.0)
    s = settle_until_done(amop_engine, bulk_id, client, count_checks=False)
    assert s.settled == {"PROCESSED": 6} and s.bulk_status == "PROCESSED"
    changes, _ = device_changes(amop_engine, bulk_id)
    assert all("adopted" in dc.status_details for dc in changes.values())
    assert len(calls(ts, "/actions/suspend")) == 1
    assert {ts.device(i)["state"] for i in iccids} == {"suspend"}


def test_an_action_lost_before_the_carrier_took_it_is_sent_again_once(amop_engine, ts, clients):
    iccids = make_fleet(amop_engine, ts, 4, "active")
    client = clients()
    client.unknown_outcome_wait_s = 0.5
    client.get_device(iccids[0])
    ts.configure(error_rate=1.0, error_statuses=[502])  # 502 before the handler: nothing applied
    bulk_id = bulk(amop_engine, iccids, "Suspend")
    assert process(amop_engine, bulk_id, client)["counts"] == {"PENDING_CARRIER": 4}
    ts.configure(error_rate=0.0)
    s = settle_until_done(amop_engine, bulk_id, client, count_checks=False)
    assert s.settled == {"PROCESSED": 4}
    assert len(calls(ts, "/actions/suspend")) == 1 + 4  # the lost one, then one per line
    assert len(calls(ts, "/history/actions/list")) >= 4  # looked for the request first
    assert {ts.device(i)["state"] for i in iccids} == {"suspend"}


def test_unknown_outcome_raised_instead_of_retrying_a_garbled_answer(amop_engine, ts, clients):
    iccids = make_fleet(amop_engine, ts, 1, "active")
    client = clients()
    client.get_device(iccids[0])
    ts.configure(malformed_rate=1.0)
    with pytest.raises(UnknownOutcome):
        client.action("suspend", iccids)
    assert len(calls(ts, "/actions/suspend")) == 1


# --- item 2: "already in the target state" ------------------------------------------------------
def test_a_refusal_because_the_line_already_is_at_the_target_settles_processed(amop_engine, ts, clients):
    iccids = make_fleet(amop_engine, ts, 2, "active")
    ts.seed_devices([{"iccid": iccids[0], "state": "suspend", "accountName": ACCOUNT}])  # already there
    client = clients()
    bulk_id = bulk(amop_engine, iccids, "Suspend")
    process(amop_engine, bulk_id, client)
    s = settle_until_done(amop_engine, bulk_id, client, count_checks=False)
    assert s.settled == {"PROCESSED": 2} and s.bulk_status == "PROCESSED"
    changes, _ = device_changes(amop_engine, bulk_id)
    assert "DeviceState.Invalid" in changes[iccids[0]].status_details
    assert "already being at the target" in changes[iccids[0]].status_details


def test_a_forced_same_state_change_reads_the_line_and_sends_only_where_it_is_not_there(amop_engine, ts, clients):
    """IsIgnoreCurrentStatus on devices our copy shows suspended already: the line is read first; the one
    the carrier shows suspended is PROCESSED with nothing sent, the one it shows active (our copy is stale)
    gets its suspend."""
    iccids = make_fleet(amop_engine, ts, 2, "suspend", start=66_500)
    ts.seed_devices([{"iccid": iccids[1], "state": "active", "accountName": ACCOUNT}])  # our copy is stale
    client = clients()
    bulk_id = bulk(amop_engine, iccids, "Suspend", IsIgnoreCurrentStatus=True)
    process(amop_engine, bulk_id, client)
    s = settle_until_done(amop_engine, bulk_id, client, count_checks=False)
    assert s.settled.get("PROCESSED") and s.bulk_status == "PROCESSED"
    changes, _ = device_changes(amop_engine, bulk_id)
    assert "confirmed at the carrier before sending" in changes[iccids[0]].status_details
    suspends = calls(ts, "/actions/suspend")
    assert [[d["deviceIds"][0]["id"] for d in c["body"]["devices"]] for c in suspends] == [[iccids[1]]]
    assert {ts.device(i)["state"] for i in iccids} == {"suspend"}


# --- the fault mix, Suspend then Restore: tests/integration/test_chaos_thingspace.py (500 lines, the
# faults injected by a proxy between the client and the simulator, logins included)


# --- items 4 and 5: reconciliation ------------------------------------------------------------
def test_a_device_list_page_that_keeps_failing_is_reported_and_the_rest_completes(amop_engine, ts, clients, monkeypatch):
    from bulkchange import reconcile
    from bulkchange.models import Integration

    iccids = make_fleet(amop_engine, ts, 230, "active", start=67_000)  # three pages
    drifted = [iccids[5], iccids[150]]  # one on the first page, one on the failing second
    ts.seed_devices([{"iccid": i, "state": "suspend", "accountName": ACCOUNT} for i in drifted])
    client = clients(attempts=1)
    real = client.list_page
    tries = Counter()

    def flaky(after=None):
        tries[after] += 1
        if after is not None and tries[after] <= 2:  # the second page fails twice, then answers
            ts.configure(error_rate=1.0, error_statuses=[429])
        try:
            return real(after)
        finally:
            ts.configure(error_rate=0.0)

    monkeypatch.setattr(client, "list_page", flaky)
    report = reconcile.reconcile_provider_statuses(amop_engine, 4, Integration.THINGSPACE, client)
    assert report["unread_pages"] == [] and report["drift"] == {"suspend -> active": 2}

    ts.seed_devices([{"iccid": i, "state": "active", "accountName": ACCOUNT} for i in drifted])
    tries.clear()
    monkeypatch.setattr(reconcile, "PAGE_ATTEMPTS", 2)  # now the second page never answers in time
    report = reconcile.reconcile_provider_statuses(amop_engine, 4, Integration.THINGSPACE, client)
    assert len(report["unread_pages"]) == 1 and report["unread_pages"][0]["page"] == 2
    assert "429" in report["unread_pages"][0]["error"]
    assert report["drift"] == {"active -> suspend": 1}  # the first page's line is still reconciled
    assert report["missing_at_carrier"] == 0


def test_reconciliation_settles_a_lost_answer_failure_when_the_line_is_at_the_target(amop_engine, ts, clients):
    from bulkchange import reconcile
    from bulkchange.models import Integration

    iccids = make_fleet(amop_engine, ts, 3, "active", start=68_000)
    client = clients()
    client.get_device(iccids[0])
    ts.configure(applied_error_rate=1.0)
    bulk_id = bulk(amop_engine, iccids, "Suspend")
    process(amop_engine, bulk_id, client)  # answers lost, applied at the carrier
    for _ in range(3):  # the carrier cannot be checked: the device changes fail after max_checks
        reconcile.settle_bulk(amop_engine, bulk_id, client, max_checks=3)
    changes, b = device_changes(amop_engine, bulk_id)
    assert {dc.status.value for dc in changes.values()} == {"API_FAILED"}
    ts.configure(applied_error_rate=0.0)
    ts.request("POST", "/scheduled/run", params={"within_s": 5})
    report = reconcile.reconcile_provider_statuses(amop_engine, 4, Integration.THINGSPACE, client)
    assert sorted(r["iccid"] for r in report["settled_after_lost_answer"]) == sorted(iccids)
    assert {r["bulk_status"] for r in report["settled_after_lost_answer"]} == {"PROCESSED"}
    changes, _ = device_changes(amop_engine, bulk_id)
    assert {dc.status.value for dc in changes.values()} == {"PROCESSED"}
    assert all("settled by reconciliation" in dc.status_details for dc in changes.values())
    with amop_engine.connect() as conn:
        assert set(conn.execute(select(t.device.c.Status)).scalars()) == {"suspend"}
        assert conn.execute(select(t.device_bulk_change.c.Status).where(
            t.device_bulk_change.c.Id == bulk_id)).scalar() == "PROCESSED"
    assert report["drift"] == {}
