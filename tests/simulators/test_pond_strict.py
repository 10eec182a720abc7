"""The POND simulator refuses what it is strict about (contract: include/simulators/contracts/pond.md):
undocumented fields, wrong types and enum values, bodies not sent as JSON, package types the
distributor does not offer, enabling services without an ACTIVE package; and every status change the
pipeline would send, walked pair by pair, is accepted call by call."""
import json

from bulkchange.models import Integration
from bulkchange.rules import TRANSITIONS, RuleError, check_transition
from simulators.devices import make_iccid
from tests.simulators.test_pond_api import DIST, ICCIDS, api, pond  # noqa: F401


def test_unknown_fields_types_content_types_and_package_types_are_refused(api, pond):
    sims = f"/{DIST}/sims"

    def refused(r, status, code, text=""):
        assert r.status_code == status, r.text
        assert r.json()["error"]["code"] == code and text in r.json()["error"]["message"], r.json()

    refused(api("POST", f"{sims}/{ICCIDS[1]}/packages", json={"packageTypeId": "102", "start": "now"}), 400,
            "VALIDATION_ERROR", "start")
    refused(api("POST", f"{sims}/{ICCIDS[1]}/packages", json={"packageTypeId": ["102"]}), 400, "VALIDATION_ERROR")
    refused(api("POST", f"{sims}/{ICCIDS[1]}/packages", json={"packageTypeId": "999"}), 400,
            "UNKNOWN_PACKAGE_TYPE", "101, 102, 103")
    refused(api("POST", f"{sims}/{ICCIDS[1]}/packages", data=json.dumps({"packageTypeId": "102"}),
                headers={"Content-Type": "text/plain"}), 415, "UNSUPPORTED_MEDIA_TYPE")
    package = pond.device(ICCIDS[1])["packages"][0]["packageId"]
    refused(api("PUT", f"{sims}/{ICCIDS[1]}/packages/{package}/status", json={"status": "terminated"}), 400,
            "VALIDATION_ERROR")
    refused(api("PUT", f"{sims}/{ICCIDS[1]}/services/status", json={"enable": False, "reason": "x"}), 400,
            "VALIDATION_ERROR", "reason")
    refused(api("PUT", f"{sims}/{ICCIDS[0]}/services/status", json={"enable": True}), 409, "NO_ACTIVE_PACKAGE")
    assert len(pond.device(ICCIDS[1])["packages"]) == 1 and pond.device(ICCIDS[0])["serviceStatus"] == "DISABLED"
    # the assumed rules are switchable, never silently lenient
    pond.configure(refuse_unknown_fields=False, require_json_content_type=False, require_active_package=False)
    assert api("PUT", f"{sims}/{ICCIDS[0]}/services/status", data=json.dumps({"enable": True, "reason": "x"}),
               headers={"Content-Type": "text/plain"}).status_code == 200
    assert api("PUT", f"{sims}/{ICCIDS[1]}/packages/{package}/status",
               json={"status": "terminated"}).status_code == 200


# how a device in each of our POND statuses looks at the carrier
SEED = {
    "INVENTORY": {"serviceStatus": "DISABLED", "packages": []},
    "ACTIVE": {"serviceStatus": "ENABLED", "packages": [{"packageTypeId": "101", "status": "ACTIVE"}]},
    "SUSPENDED": {"serviceStatus": "DISABLED", "packages": [{"packageTypeId": "101", "status": "ACTIVE"}]},
    "TERMINATED": {"serviceStatus": "DISABLED", "packages": [{"packageTypeId": "101", "status": "TERMINATED"}]},
}


def pipeline_calls(api, pond, iccid: str, target: str) -> list[int]:
    """The calls PondStatusUpdate makes for ``target`` (changes/status_update/pond.py), their HTTP statuses."""
    sim = f"/{DIST}/sims/{iccid}"
    statuses = []
    if target == "ACTIVE":
        if not any(p["status"] == "ACTIVE" and p["packageTypeId"] == "102" for p in pond.device(iccid)["packages"]):
            r = api("POST", f"{sim}/packages", json={"packageTypeId": "102"})
            statuses.append(r.status_code)
            new = r.json().get("packageId")
            statuses.append(api("PUT", f"{sim}/packages/{new}/status", json={"status": "ACTIVE"}).status_code)
        for p in pond.device(iccid)["packages"]:
            if p["status"] == "ACTIVE" and p["packageTypeId"] != "102":
                statuses.append(api("PUT", f"{sim}/packages/{p['packageId']}/status",
                                    json={"status": "TERMINATED"}).status_code)
        statuses.append(api("PUT", f"{sim}/services/status", json={"enable": True}).status_code)
        return statuses
    statuses.append(api("PUT", f"{sim}/services/status", json={"enable": False}).status_code)
    if target == "TERMINATED":
        for p in pond.device(iccid)["packages"]:
            if p["status"] in ("ACTIVE", "PENDING"):
                statuses.append(api("PUT", f"{sim}/packages/{p['packageId']}/status",
                                    json={"status": "TERMINATED"}).status_code)
    return statuses


def test_every_pair_the_pipeline_sends_is_accepted_by_the_simulator(api, pond):
    targets = sorted(TRANSITIONS[Integration.POND])
    pairs = [(cur, target) for cur in SEED for target in targets if cur != target]
    iccids = {pair: make_iccid(5000 + i) for i, pair in enumerate(pairs)}
    pond.seed_devices([{"iccid": iccid, **SEED[cur]} for (cur, _), iccid in iccids.items()])
    answers = {pair: pipeline_calls(api, pond, iccid, pair[1]) for pair, iccid in iccids.items()}
    too_loose, sent = [], 0
    for ignore in (False, True):
        for pair, statuses in answers.items():
            try:
                if check_transition(Integration.POND, pair[0], pair[1], ignore).already_there:
                    continue
            except RuleError:
                continue
            sent += 1
            if any(s >= 400 for s in statuses):
                too_loose.append((pair, ignore, statuses))
    assert too_loose == [], f"the pipeline would send what the carrier refuses: {too_loose}"
    assert sent
