"""One set of transition rules, checked from both sides: for every (from, to) pair of Jasper SIM
statuses, whatever the pipeline's rules (``bulkchange.rules``) let through must be accepted by the
simulator, which enforces Control Center's published rules on its own (``simulators.jasper``)."""
import pytest

from bulkchange.models import Integration
from bulkchange.rules import TRANSITIONS, RuleError, check_transition
from simulators.devices import make_iccid
from simulators.jasper import STATUSES

TARGETS = sorted(TRANSITIONS[Integration.JASPER])


def pipeline_sends(current: str, target: str, ignore: bool) -> bool:
    """True when the pipeline would send this status change to the carrier."""
    try:
        check = check_transition(Integration.JASPER, current, target, ignore)
    except RuleError:
        return False
    return not check.already_there


def test_every_pair_the_pipeline_sends_is_accepted_by_the_simulator(api, jasper):
    pairs = [(cur, target) for cur in STATUSES for target in TARGETS if cur != target]
    iccids = {pair: make_iccid(1000 + i) for i, pair in enumerate(pairs)}
    jasper.seed_devices([{"iccid": iccid, "status": cur} for (cur, _), iccid in iccids.items()])
    sent = refused_by_pipeline = 0
    answers: dict[tuple[str, str], int] = {}
    for (cur, target), iccid in iccids.items():
        r = api("PUT", f"/devices/{iccid}", json={"status": target})
        answers[(cur, target)] = r.status_code
        if r.status_code == 200:  # undo, so the device stays at ``cur`` for nothing else
            jasper.seed_devices([{"iccid": iccid, "status": cur}])
    too_loose = []
    for ignore in (False, True):
        for pair, status in answers.items():
            if pipeline_sends(*pair, ignore):
                sent += 1
                if status != 200:
                    too_loose.append((pair, ignore, status))
            else:
                refused_by_pipeline += 1
    assert too_loose == [], f"the pipeline would send what the carrier refuses: {too_loose}"
    # the walk is meaningful: both sides refuse something and accept something
    assert sent and refused_by_pipeline
    assert answers[("ACTIVATED", "TEST_READY")] == 400 and answers[("INVENTORY", "ACTIVATED")] == 200


@pytest.mark.parametrize("ignore", [False, True])
def test_activated_to_test_ready_is_refused_on_both_sides(api, jasper, ignore):
    iccid = make_iccid(1)
    r = api("PUT", f"/devices/{iccid}", json={"status": "TEST_READY"})
    assert r.status_code == 400 and r.json()["errorCode"] == "10000029"
    with pytest.raises(RuleError, match="10000029"):
        check_transition(Integration.JASPER, "ACTIVATED", "TEST_READY", ignore)


def test_every_telegence_pair_the_pipeline_sends_is_accepted_by_the_simulator(simulator):
    """The same walk for Telegence's subscriberStatus letters (PATCH of the line)."""
    from simulators.telegence import LINECONFIG
    from simulators.telegence import STATUSES as TG_STATUSES

    control = simulator.control("telegence")
    control.reset()
    control.set_accounts({"pairs": "pairs-secret"})
    headers = {"app-id": "pairs", "app-secret": "pairs-secret"}
    targets = sorted(TRANSITIONS[Integration.TELEGENCE])
    pairs = [(cur, target) for cur in TG_STATUSES for target in targets if cur != target]
    lines = {pair: (make_iccid(3000 + i), f"1404777{i:04d}") for i, pair in enumerate(pairs)}
    control.seed_devices([{"iccid": iccid, "msisdn": number, "status": cur}
                          for (cur, _), (iccid, number) in lines.items()])
    import requests

    answers = {}
    with requests.Session() as http:
        for (cur, target), (_, number) in lines.items():
            body = {"effectiveDate": "2030-01-01",
                    "serviceCharacteristic": [{"name": "subscriberStatus", "value": target}]}
            answers[(cur, target)] = http.patch(f"{simulator.url_for('telegence')}{LINECONFIG}/{number}", json=body,
                                                headers=headers, timeout=10).status_code
    control.reset()
    too_loose = []
    for ignore in (False, True):
        for (cur, target), status in answers.items():
            try:
                check = check_transition(Integration.TELEGENCE, cur, target, ignore)
            except RuleError:
                continue
            if not check.already_there and status != 200:
                too_loose.append(((cur, target), ignore, status))
    assert too_loose == [], f"the pipeline would send what the carrier refuses: {too_loose}"
    assert answers[("C", "A")] == 400 and answers[("S", "A")] == 200
