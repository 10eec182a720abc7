"""Non-idempotent calls are sent once (issue 12 item 6), against the simulators over real HTTP.

The simulators' own fault injection makes the carrier apply a create and lose its answer
(``applied_error_rate``: applied, then a 502; ``malformed_rate``: applied, body cut) or refuse it
before doing anything (``error_rate``: a 5xx, nothing applied), for POSTs only so the look-ups read
cleanly. Asserted from the simulator's own state and call log: at most one create per device, a
lost answer adopted as PROCESSED with what the carrier holds, and a create the carrier never saw
sent again exactly once (then API_FAILED / REV_IO_FAILED with the evidence when that also fails).

Rev.io service creation, POND package adds, Teal operations (enable / disable, by requestId) and
Telegence line PATCHes (checked before any resend, like Jasper edits)."""
from collections import Counter

import pytest
from sqlalchemy import select

from bulkchange import processing
from bulkchange.carriers.telegence import characteristic
from bulkchange.db import schema as t
from tests.integration import test_pond_status_update as pond_mod
from tests.integration import test_revio_after_status as rev_mod
from tests.integration import test_teal_status_update as teal_mod
from tests.integration import test_telegence_status_update as tg_mod

# the carriers' fixtures, shared with their own test modules
from tests.integration.test_pond_status_update import pond, pond_client  # noqa: F401
from tests.integration.test_revio_after_status import make_revio, revio  # noqa: F401
from tests.integration.test_teal_status_update import teal, teal_client  # noqa: F401
from tests.integration.test_telegence_status_update import tg, tg_client  # noqa: F401

NOT_THERE = "checked at the carrier afterwards: the change is not there"
REFUSED_POSTS = dict(error_statuses=[503], fault_methods=["POST"])


def log_rows(engine, description):
    """The call log's rows of one kind of call (a resend's says "(attempt n)"): (attempt number, outcome)."""
    lg = t.device_bulk_change_log
    with engine.connect() as conn:
        return [(r.AttemptNumber, r.Outcome) for r in conn.execute(
            select(lg).where(lg.c.LogEntryDescription.like(description + "%")).order_by(lg.c.Id))]


def changes_by_iccid(engine, table=t.m2m_device_change):
    with engine.connect() as conn:
        return {r.ICCID: r for r in conn.execute(select(table))}


# --- Rev.io: POST /Services and /ServiceProduct ---------------------------------------------------
def rev_posts(revio, what):
    """ICCID (number2, or the parent service's) -> the create POSTs Rev.io saw for it."""
    return [c for c in revio.calls(method="POST", limit=100_000) if c["path"].rstrip("/").endswith(what)]


def test_revio_creates_whose_answers_are_lost_are_found_not_sent_again(amop_engine, fleet_factory, make_client,
                                                                       make_revio, revio):
    """Every create is applied by Rev.io and its answer lost (502): each is looked up by the published
    search and adopted; one service per device and one product per product id, each POSTed once."""
    fleet = fleet_factory(6)
    revio.configure(applied_error_rate=1.0, fault_methods=["POST"])
    bulk_id = fleet.bulk("Suspend", RevService=rev_mod.REV_SERVICE, RevServiceProductCreateModel=rev_mod.PRODUCTS)
    summary = rev_mod.run_all(amop_engine, bulk_id, make_client(), make_revio())
    assert summary["counts"] == {"PROCESSED": 6}
    services, products, changes, _ = rev_mod.stored(amop_engine)
    rev_mod.assert_exactly_once(revio, fleet, services, products)  # simulator state = what we stored
    posts = rev_posts(revio, "/Services")
    assert Counter(c["body"]["number2"] for c in posts) == Counter({i: 1 for i in fleet.iccids})
    assert {c["fault"] for c in posts} == {"applied_error"}
    assert len(rev_posts(revio, "/ServiceProduct")) == 12
    # one log row per attempt the carrier saw, each saying its outcome was unknown
    assert log_rows(amop_engine, "Create Rev.io Service: Rev.io API") == [(1, "unknown")] * 6


def test_revio_create_the_carrier_never_saw_is_sent_once_more(amop_engine, fleet_factory, make_client, make_revio,
                                                              revio):
    """Half the creates are refused with a 503 before Rev.io does anything: each is looked up (nothing
    there), sent once more, and a second 503 ends it REV_IO_FAILED with that evidence, never a third POST."""
    fleet = fleet_factory(24)
    revio.configure(error_rate=0.5, seed=12, **REFUSED_POSTS)
    bulk_id = fleet.bulk("Suspend", RevService=rev_mod.REV_SERVICE)
    rev_mod.run_all(amop_engine, bulk_id, make_client(), make_revio())
    posts: dict[str, list[dict]] = {}
    for c in rev_posts(revio, "/Services"):
        posts.setdefault(c["body"]["number2"], []).append(c)
    held = Counter(s["number2"] for s in revio.request("GET", "/services"))
    changes = changes_by_iccid(amop_engine)
    outcomes = Counter()
    for iccid in fleet.iccids:
        sent = [c["fault"] for c in posts[iccid]]
        assert sent in ([None], ["error", None], ["error", "error"]), (iccid, sent)
        created = sent[-1] is None
        assert held[iccid] == (1 if created else 0)
        dc = changes[iccid]
        if created:
            assert dc.Status == "PROCESSED"
        else:
            assert dc.Status == "REV_IO_FAILED" and NOT_THERE in dc.StatusDetails
        outcomes[len(sent), created] += 1
    # the seeded faults give every path: sent once, sent again and created, sent again and failed
    assert set(outcomes) == {(1, True), (2, True), (2, False)}, outcomes
    rows = log_rows(amop_engine, "Create Rev.io Service: Rev.io API")
    assert len(rows) == sum(len(v) for v in posts.values())  # one log row per attempt sent
    assert Counter(rows) == Counter({(1, "applied"): outcomes[1, True], (1, "unknown"): outcomes[2, True]
                                     + outcomes[2, False], (2, "applied"): outcomes[2, True],
                                     (2, "unknown"): outcomes[2, False]})


# --- POND: POST /{distributor}/sims/{iccid}/packages ---------------------------------------------
def package_posts(pond):
    out: dict[str, list] = {}
    for c in pond.calls(method="POST", path_contains="/packages", limit=100_000):
        out.setdefault(c["iccid"], []).append(c["fault"])
    return out


def test_pond_adds_whose_answers_are_lost_are_found_not_sent_again(sqlite_engine, pond, pond_client):
    fleet = pond_mod.PondFleet(sqlite_engine, pond, 8, status="SUSPENDED", service_status="DISABLED",
                               packages=[{"packageTypeId": "101", "status": "ACTIVE"}])
    pond.configure(applied_error_rate=1.0, fault_methods=["POST"])
    bulk_id = fleet.bulk("Active", Request={"PackageTypeId": "102"})
    _, summary = pond_mod.run_all(sqlite_engine, bulk_id, pond_client())
    assert summary["counts"] == {"PROCESSED": 8}
    assert package_posts(pond) == {i: ["applied_error"] for i in fleet.iccids}
    sims = fleet.sims()
    for sim in sims.values():
        assert sorted((p["packageTypeId"], p["status"]) for p in sim["packages"]) == [
            ("101", "TERMINATED"), ("102", "ACTIVE")]
    _, _, _, stored = pond_mod.db_state(sqlite_engine)
    active = {(r["ICCID"], str(r["PackageId"])) for r in stored if r["Status"] == "ACTIVE"}
    assert active == {(i, str(p["packageId"])) for i, s in sims.items() for p in s["packages"]
                      if p["status"] == "ACTIVE"}  # the carrier's package, found after the lost answer


def test_pond_add_the_carrier_never_saw_is_sent_once_more(sqlite_engine, pond, pond_client):
    fleet = pond_mod.PondFleet(sqlite_engine, pond, 24, status="SUSPENDED", service_status="DISABLED",
                               packages=[{"packageTypeId": "101", "status": "ACTIVE"}])
    pond.configure(error_rate=0.5, seed=3, **REFUSED_POSTS)
    bulk_id = fleet.bulk("Active", Request={"PackageTypeId": "102"})
    pond_mod.run_all(sqlite_engine, bulk_id, pond_client())
    posts, sims, changes = package_posts(pond), fleet.sims(), changes_by_iccid(sqlite_engine)
    outcomes = Counter()
    for iccid in fleet.iccids:
        sent = posts[iccid]
        assert sent in ([None], ["error", None], ["error", "error"]), (iccid, sent)
        created = sent[-1] is None
        types = sorted((p["packageTypeId"], p["status"]) for p in sims[iccid]["packages"])
        if created:
            assert changes[iccid].Status == "PROCESSED" and types == [("101", "TERMINATED"), ("102", "ACTIVE")]
        else:
            assert changes[iccid].Status == "API_FAILED" and NOT_THERE in changes[iccid].StatusDetails
            assert types == [("101", "ACTIVE")]
        outcomes[len(sent), created] += 1
    assert set(outcomes) == {(1, True), (2, True), (2, False)}, outcomes


# --- Teal: POST /esims/enable|disable?requestId= ---------------------------------------------------
def test_teal_operations_whose_answers_are_lost_are_found_by_request_id(amop_engine, teal, teal_client):
    iccids = teal_mod.make_fleet(amop_engine, teal, 30, "ONLINE", start=37_000)
    teal.configure(applied_error_rate=1.0, fault_methods=["POST"])
    bulk_id = teal_mod.bulk(amop_engine, iccids, "Suspend")
    assert teal_mod.process(amop_engine, bulk_id, teal_client, batch_size=10)["counts"] == {"PENDING_CARRIER": 30}
    assert teal_mod.settle_until_done(amop_engine, bulk_id, teal_client).settled == {"PROCESSED": 30}
    posts = teal.calls(method="POST")
    assert len(posts) == 3 and {c["fault"] for c in posts} == {"applied_error"}  # one per request, never resent
    assert len(teal.request("GET", "/operations")) == 3
    assert {d["deviceStatus"] for d in teal.devices(limit=1000)["devices"]} == {"STOPPED"}


def test_teal_operation_the_carrier_never_saw_is_sent_once_more(amop_engine, teal, teal_client):
    iccids = teal_mod.make_fleet(amop_engine, teal, 4, "ONLINE", start=38_000)
    teal.configure(error_rate=1.0, **REFUSED_POSTS)
    bulk_id = teal_mod.bulk(amop_engine, iccids, "Suspend")
    assert teal_mod.process(amop_engine, bulk_id, teal_client)["counts"] == {"API_FAILED": 4}
    posts = teal.calls(method="POST")
    assert len(posts) == 2 and len({c["query"] for c in posts}) == 1  # the same requestId, sent twice
    assert teal.request("GET", "/operations") == []
    assert all(NOT_THERE in dc.StatusDetails for dc in changes_by_iccid(amop_engine).values())


# --- Telegence: PATCH of a line, checked before any resend ----------------------------------------
def test_telegence_patch_whose_answer_is_lost_is_checked_not_resent(amop_engine, tg, tg_client):
    iccids, numbers = tg_mod.make_fleet(amop_engine, tg, 10, "A", start=47_000)
    tg.configure(applied_error_rate=1.0, fault_methods=["PATCH"])
    bulk_id = tg_mod.bulk(amop_engine, iccids, "Suspend", numbers)
    assert tg_mod.process(amop_engine, bulk_id, tg_client)["counts"] == {"PROCESSED": 10}
    patches = Counter(c["path"].rsplit("/", 1)[-1] for c in tg.calls(method="PATCH"))
    assert patches == Counter({n: 1 for n in numbers.values()})
    assert {tg.device(i)["subscriberStatus"] for i in iccids} == {"S"}


def test_telegence_sim_and_imei_swaps_whose_answers_are_lost_are_checked_not_resent(amop_engine, tg, tg_client):
    """ChangeICCIDAndIMEI on Telegence: the PATCH is applied and its answer lost; the line read
    shows the new SIM / IMEI, so the swap is PROCESSED, the line's MobilityDevice row takes it, and no second PATCH."""
    from tests.integration.test_rate_plan_identifier_tg_teal_pond import IDENT, add_bulk, run, tg_fleet

    from bulkchange.db import seed

    iccids, numbers = tg_fleet(amop_engine, tg, 4, 63_000)
    new_sims = {iccids[0]: seed.make_iccid(63_500), iccids[1]: seed.make_iccid(63_501)}
    new_imeis = {iccids[2]: "490154203237518", iccids[3]: "352099001761481"}
    rows = [{"ICCID": i, "ChangeRequest": {"NewICCID": s}} for i, s in new_sims.items()]
    rows += [{"ICCID": i, "ChangeRequest": {"NewIMEI": m}} for i, m in new_imeis.items()]
    tg.configure(applied_error_rate=1.0, fault_methods=["PATCH"])
    bulk_id = add_bulk(amop_engine, 6, IDENT, rows, portal_type=2)
    assert run(amop_engine, bulk_id, tg_client)["counts"] == {"PROCESSED": 4}
    patches = Counter(c["path"].rsplit("/", 1)[-1] for c in tg.calls(method="PATCH"))
    assert patches == Counter({n: 1 for n in numbers.values()})
    with amop_engine.connect() as conn:
        devices = {r.MSISDN: r for r in conn.execute(select(t.mobility_device))}
    for old, new in new_sims.items():
        assert devices[numbers[old]].ICCID == new
        assert characteristic(tg_client.get_service(numbers[old]), "sim") == new
    for iccid, imei in new_imeis.items():
        assert devices[numbers[iccid]].IMEI == imei
        assert characteristic(tg_client.get_service(numbers[iccid]), "IMEI") == imei
