"""The Teal simulator refuses what it is strict about (contract: include/simulators/contracts/teal.md):
undocumented fields and query parameters, bodies not sent as JSON, plans the account does not have,
enable of an enabled / disable of a stopped eSIM; and every status change the pipeline would send
(rules plus its own "already there" read) is accepted, walked pair by pair."""
import json

from bulkchange.changes.status_update.teal import reached, teal_operation
from bulkchange.models import Integration
from bulkchange.rules import TRANSITIONS, RuleError, check_transition
from simulators.devices import make_iccid
from simulators.teal import STATUSES, make_eid
from tests.simulators.test_teal_api import EIDS, ICCIDS, api, teal  # noqa: F401


def run(api, teal, path, body, request_id, **params):
    r = api("POST", path, json=body, params={"requestId": request_id, **params})
    assert r.status_code == 200, r.text
    teal.run_scheduled(60)
    return api("GET", "/operation-result", params={"requestId": request_id}).json()["entries"]


def test_unknown_fields_parameters_content_types_and_plans_are_refused(api, teal):
    def refused(r, status, text):
        assert r.status_code == status, r.text
        assert r.json()["success"] is False and text in r.json()["errorMessage"], r.json()

    refused(api("POST", "/esims/disable", json={"entries": [EIDS[0]], "force": True}, params={"requestId": "r1"}),
            400, "force")
    refused(api("POST", "/esims/disable", json={"entries": [EIDS[0]]}, params={"requestId": "r2", "when": "now"}),
            400, "when")
    refused(api("POST", "/esims/assign-plan", json={"entries": [{"eid": EIDS[0], "planUuid": "plan-0002",
                                                                 "name": "x"}]}, params={"requestId": "r3"}),
            400, "entries[0].name")
    refused(api("POST", "/esims/disable", data=json.dumps({"entries": [EIDS[0]]}),
                headers={"Content-Type": "text/plain"}, params={"requestId": "r4"}), 415, "application/json")
    refused(api("GET", "/esims", params={"limit": 10, "sort": "eid"}), 400, "sort")
    assert teal.request("GET", "/operations") == []  # nothing accepted
    entries = run(api, teal, "/esims/assign-plan", {"entries": [{"eid": EIDS[0], "planUuid": "NO-SUCH-PLAN"},
                                                                {"eid": EIDS[3], "planUuid": "plan-0002"}]}, "r5")
    assert [e["success"] for e in entries] == [False, True] and "NO-SUCH-PLAN" in entries[0]["errorMessage"]
    assert teal.device(ICCIDS[0])["planUuid"] == "plan-0001"
    entries = run(api, teal, "/esims/enable", {"entries": [EIDS[0], EIDS[1], EIDS[2]]}, "r6")
    assert [e["success"] for e in entries] == [False, False, True]
    # the assumed rules are switchable, never silently lenient
    teal.configure(refuse_unknown_fields=False, require_json_content_type=False, validate_plans=False,
                   refuse_noop_transitions=False)
    assert api("POST", "/esims/disable", data=json.dumps({"entries": [EIDS[0]], "force": True}),
               headers={"Content-Type": "text/plain"}, params={"requestId": "r7", "when": "now"}).status_code == 200
    entries = run(api, teal, "/esims/assign-plan", {"entries": [{"eid": EIDS[3], "planUuid": "NO-SUCH-PLAN"}]}, "r8")
    assert entries[0]["success"] is True
    assert run(api, teal, "/esims/disable", {"entries": [EIDS[2]]}, "r9")[0]["success"] is True


def test_plan_listing_lists_the_accounts_plans(api, teal):
    r = api("GET", "/plans")
    assert r.status_code == 200, r.text
    assert [e["uuid"] for e in r.json()["entries"]] == ["plan-0001", "plan-0002", "plan-0003"]
    teal.configure(known_plans=["plan-0042"])
    assert "plan-0042" in [e["uuid"] for e in api("GET", "/plans").json()["entries"]]
    r = api("GET", "/plans", params={"limit": 5})
    assert r.status_code == 400 and "limit" in r.json()["errorMessage"]


def pipeline_sends(current: str, target: str, ignore: bool) -> bool:
    """True when the pipeline would send this change (rules.py, then its read of the eSIM's status)."""
    try:
        check = check_transition(Integration.TEAL, current, target, ignore)
    except RuleError:
        return False
    return not check.already_there and not reached({"deviceStatus": current}, target)


def test_every_pair_the_pipeline_sends_is_accepted_by_the_simulator(api, teal):
    targets = sorted(TRANSITIONS[Integration.TEAL])
    pairs = [(cur, target) for cur in STATUSES for target in targets if cur != target]
    iccids = {pair: make_iccid(4000 + i) for i, pair in enumerate(pairs)}
    teal.seed_devices([{"iccid": iccid, "status": cur} for (cur, _), iccid in iccids.items()])
    answers = {}
    for n, ((cur, target), iccid) in enumerate(iccids.items()):
        entry = run(api, teal, f"/esims/{teal_operation(target)}", {"entries": [make_eid(iccid)]}, f"pair-{n}")[0]
        answers[(cur, target)] = entry["success"]
    too_loose, sent, refused = [], 0, 0
    for ignore in (False, True):
        for pair, ok in answers.items():
            if pipeline_sends(*pair, ignore):
                sent += 1
                if not ok:
                    too_loose.append((pair, ignore))
            else:
                refused += 1
    assert too_loose == [], f"the pipeline would send what the carrier refuses: {too_loose}"
    assert sent and refused
    assert answers[("WAITING", "ONLINE")] is False and answers[("STOPPED", "ONLINE")] is True
