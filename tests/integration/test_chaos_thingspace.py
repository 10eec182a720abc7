"""Chaos test of issue 20 (item 6) / issue 12 (item 8) on ThingSpace: 500 lines Suspend then Restore
through the core and reconciliation, every ThingSpace call (OAuth token, session login, actions,
request status, provisioning history, device list) going through the fault-injecting proxy
(simulators/faultproxy.py) with the issue's mix, so answers are lost both before the carrier applies
an action (5xx, 429, dropped before forwarding) and after (applied-but-502, garbled 200, dropped after).

Afterwards, from the simulator's own record: no line with an action accepted twice, no device
change whose status disagrees with the line, no device failed by a login fault."""
import json
import time
from collections import Counter


from bulkchange import processing
from bulkchange.changes.status_update.thingspace import ThingSpaceStatusUpdate
from simulators.faultproxy import FaultProxy
from tests.integration.test_chaos_jasper import FAULT_MIX
from tests.integration.test_thingspace_faults import client_for, device_changes
from tests.integration.test_thingspace_status_update import (  # noqa: F401 - fixtures
    bulk,
    make_fleet,
    settle_until_done,
    ts,
)

N = 500


def test_chaos_500_lines_suspend_then_restore(amop_engine, ts, simulator, monkeypatch):
    monkeypatch.setattr(ThingSpaceStatusUpdate, "group_size", 5)  # 100 action requests per phase
    iccids = make_fleet(amop_engine, ts, N, "active", start=69_000)
    carrier = simulator.carrier("thingspace")
    started = time.monotonic()
    with FaultProxy(simulator.base_url, seed=20, retry_after="0.05", fault_auth=True, error_5xx=0.10,
                    **FAULT_MIX) as proxy:
        client = client_for(simulator, attempts=5)
        client.base_url = proxy.rewrite(client.base_url)
        client.unknown_outcome_wait_s = 1.5  # the simulator completes actions in 0.3 s
        try:
            for status, action, target in (("Suspend", "suspend", "suspend"), ("Restore", "restore", "active")):
                bulk_id = bulk(amop_engine, iccids, status)
                plan = processing.prepare(amop_engine, bulk_id, batch_size=50)
                for b in plan.batches:
                    # the carrier expires the tokens before every batch: each batch logs in again
                    # (after a 401) through the faults
                    ts.request("POST", "/expire-tokens")
                    processing.process_batch(amop_engine, bulk_id, b.device_change_ids, client=client)
                processing.finalize(amop_engine, bulk_id)
                settle_until_done(amop_engine, bulk_id, client, rounds=120, count_checks=False)

                accepted = Counter(d["deviceIds"][0]["id"] for r in list(carrier.requests.values())
                                   if r["action"] == action for d in r["devices"])
                assert [i for i, n in accepted.items() if n > 1] == [], f"{action} accepted twice"
                changes, _ = device_changes(amop_engine, bulk_id)
                state = {i: ts.device(i)["state"] for i in iccids}
                wrong = [(i, dc.status.value, state[i], dc.status_details) for i, dc in changes.items()
                         if (dc.status.value == "PROCESSED") != (state[i] == target)]
                assert wrong == []
                login_failed = [(i, dc.status_details) for i, dc in changes.items()
                                if dc.status.value != "PROCESSED" and any(
                                    w in (dc.status_details or "") for w in ("OAuth", "login", "token"))]
                assert login_failed == []
                assert Counter(dc.status.value for dc in changes.values()) == {"PROCESSED": N}
        finally:
            client.close()
        seen, faults = proxy.requests(), proxy.fault_counts()
    print(f"\n{N} ThingSpace lines suspend + restore: {time.monotonic() - started:.1f}s, {len(seen)} requests, "
          f"faults {dict(faults)}")
    assert all(faults[f] for f in ("error_5xx", *FAULT_MIX)), faults
    assert not faults["upstream_unreachable"]
    # the lost answers hit every kind of call, the logins and the actions both before and after
    by_kind = Counter((kind, r["fault"]) for r in seen if r["fault"]
                      for kind in [next((k for k in ("oauth2/token", "session/login", "/actions/suspend",
                                                     "/actions/restore", "/status", "/history/", "/actions/list")
                                         if k in r["path"]), r["path"])])
    assert any(by_kind[("oauth2/token", f)] or by_kind[("session/login", f)] for f in ("error_5xx", "rate_429",
                                                                                       "drop_before", "garbage"))
    for action in ("/actions/suspend", "/actions/restore"):
        assert sum(by_kind[(action, f)] for f in ("error_5xx", "rate_429", "drop_before")) > 0, by_kind
        assert sum(by_kind[(action, f)] for f in ("applied_502", "garbage", "drop_after")) > 0, by_kind
    for kind in ("/status", "/actions/list"):
        assert sum(n for (k, _), n in by_kind.items() if k == kind) > 0, by_kind
    # an action POST the carrier saw is never seen again for the same lines after it was accepted
    for action in ("suspend", "restore"):
        sent = Counter(d["deviceIds"][0]["id"] for r in seen
                       if r["forwarded"] and r["path"].endswith(f"/actions/{action}") and r["upstream_status"] == 200
                       for d in json.loads(r["body"])["devices"])
        assert [i for i, n in sent.items() if n > 1] == []
