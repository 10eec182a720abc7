"""Every carrier's auth flow, run for real against its simulator, twice: with the right credentials
(tokens fetched, calls logged) and with a wrong secret (the carrier refuses it, the devices fail
with the reason). Afterwards no secret the clients held (keys, passwords, fetched tokens, in any
encoding) is found in any text column of any AMOP table, in the mails the bulk changes send, or
in what the XCom backend stores of the batch summaries."""
import base64
import json
from urllib.parse import quote

import pytest
from sqlalchemy import String, Text, UnicodeText, select

from bulkchange import notify, processing, sanitize
from bulkchange.carriers import CarrierSettings, build_client, build_revio_client
from bulkchange.db import schema as t
from bulkchange.engine import CallPolicy, RateLimiter, RetryPolicy
from bulkchange.models import Integration
from tests.integration import test_pond_status_update as pond_t
from tests.integration import test_teal_status_update as teal_t
from tests.integration import test_telegence_status_update as tg_t
from tests.integration import test_thingspace_status_update as ts_t
from tests.integration.conftest import KEY as JASPER_KEY
from tests.integration.test_pond_status_update import pond  # noqa: F401 (fixture)
from tests.integration.test_revio_after_status import REV_CLIENT, REV_KEY, REV_PASSWORD, REV_USER, make_revio, revio  # noqa: F401,E501
from tests.integration.test_teal_status_update import teal  # noqa: F401 (fixture)
from tests.integration.test_telegence_status_update import tg  # noqa: F401 (fixture)
from tests.integration.test_thingspace_status_update import ts  # noqa: F401 (fixture)

WRONG = "wrong-Secret/+=probe-5521"


class EchoingGateway:
    """A gateway in front of the simulators that, like some carrier gateways, answers a refused
    request with an error page echoing the request's credentials (headers and body): the probe
    that puts secrets into what the pipeline receives."""

    def __init__(self, upstream: str):
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        import requests

        gateway = self

        class Handler(BaseHTTPRequestHandler):
            def _any(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
                resp = requests.request(self.command, upstream + self.path, headers=headers, data=body, timeout=30)
                content = resp.content
                if resp.status_code >= 400:
                    creds = [v for k, v in headers.items() if k.lower() not in ("accept", "content-type",
                                                                                 "user-agent", "connection",
                                                                                 "accept-encoding")]
                    content = json.dumps({"errorMessage": f"invalid credentials {' '.join(creds)}",
                                          "request": {"headers": headers, "body": body.decode(errors="replace")}}
                                         ).encode()
                    gateway.echoed += 1
                self.send_response(resp.status_code)
                self.send_header("Content-Type", resp.headers.get("Content-Type", "application/json"))
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                self.wfile.write(content)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _any

            def log_message(self, *args):
                pass

        self.echoed = 0
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.origin = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()


def _policy():
    return CallPolicy(RateLimiter(None), RetryPolicy(max_attempts=2, base_delay=0.02, max_delay=0.2))


def _jasper(simulator, engine, jasper, fleet_factory, secret):
    fleet = fleet_factory(2, start=310_000 if secret == JASPER_KEY else 310_100,
                          sp_id=1 if secret == JASPER_KEY else 2)
    client = build_client(Integration.JASPER, CarrierSettings(simulator.url_for("jasper"), "acct", secret),
                          policy=_policy())
    return fleet.bulk("Suspend"), client


def _run(engine, bulk_id, client, revio_client=None):
    plan = processing.prepare(engine, bulk_id)
    summaries = []
    for b in plan.batches:
        summaries.append(processing.process_batch(engine, bulk_id, b.device_change_ids, client=client,
                                                  revio_client=revio_client).as_dict())
    summaries.append(processing.finalize(engine, bulk_id))
    client.close()
    return summaries


def _forms(secret):
    return {secret, quote(secret, safe=""), json.dumps(secret)[1:-1], base64.b64encode(secret.encode()).decode()}


def _leaks(text, secrets):
    return sorted({s for s in secrets for f in _forms(s) if f and f in (text or "")})


def _scan_db(engine, secrets):
    found = []
    with engine.connect() as conn:
        for table in t.metadata.sorted_tables:
            cols = [c for c in table.columns if isinstance(c.type, (String, Text, UnicodeText))]
            if not cols:
                continue
            for row in conn.execute(select(*cols)):
                for col, value in zip(cols, row):
                    leak = _leaks(value, secrets)
                    if leak:
                        found.append((table.name, col.name, leak))
    return found


@pytest.fixture
def gateway(simulator):
    from urllib.parse import urlsplit

    parts = urlsplit(simulator.url_for("jasper"))
    gw = EchoingGateway(f"{parts.scheme}://{parts.netloc}")
    yield gw
    gw.close()


def test_no_secret_in_any_column_mail_or_xcom(amop_engine, simulator, jasper, fleet_factory, ts, tg, teal, pond,
                                               revio, make_revio, gateway, monkeypatch):
    from urllib.parse import urlsplit

    sim_origin = "{0.scheme}://{0.netloc}".format(urlsplit(simulator.url_for("jasper")))
    real_url_for = simulator.url_for
    monkeypatch.setattr(simulator, "url_for", lambda carrier: real_url_for(carrier).replace(sim_origin, gateway.origin))
    engine = amop_engine  # the same database as fleet_factory's (it follows amop_engine)
    bulks = []
    # Jasper: Basic auth with the API key
    for secret in (JASPER_KEY, WRONG):
        bulks.append(_jasper(simulator, engine, jasper, fleet_factory, secret))
    # ThingSpace: OAuth client credentials, then a UWS session token
    iccids = ts_t.make_fleet(engine, ts, 2, "active", start=320_000)
    for key_secret in (ts_t.SECRETS[0], WRONG):
        client = build_client(Integration.THINGSPACE, CarrierSettings(
            simulator.url_for("thingspace"), "ts-key", key_secret,
            {"uws_username": "ts-user", "uws_password": ts_t.SECRETS[1], "account_name": ts_t.ACCOUNT}),
            policy=_policy())
        bulks.append((ts_t.bulk(engine, iccids, "Suspend"), client))
    # Telegence: app id / app secret headers
    iccids, numbers = tg_t.make_fleet(engine, tg, 2, "A", start=330_000)
    for secret in (tg_t.SECRET, WRONG):
        client = build_client(Integration.TELEGENCE, CarrierSettings(simulator.url_for("telegence"), tg_t.APP, secret),
                              policy=_policy())
        bulks.append((tg_t.bulk(engine, iccids, "Suspend"), client))
    # Teal: API key / secret
    iccids = teal_t.make_fleet(engine, teal, 2, "ONLINE", start=340_000)
    for secret in (teal_t.SECRET, WRONG):
        client = build_client(Integration.TEAL, CarrierSettings(simulator.url_for("teal"), teal_t.KEY, secret),
                              policy=_policy())
        bulks.append((teal_t.bulk(engine, iccids, "Suspend"), client))
    # POND: Basic auth (user:password) per distributor
    fleet = pond_t.PondFleet(engine, pond, 2, status="ACTIVE", service_status="ENABLED", packages=[{"packageTypeId": "101", "status": "ACTIVE"}],
                             start=350_000)
    for secret in (pond_t.SECRET, WRONG):
        client = build_client(Integration.POND, CarrierSettings(simulator.url_for("pond"), pond_t.USER, secret,
                                                                {"distributor_id": pond_t.DIST}), policy=_policy())
        bulks.append((fleet.bulk("Suspend"), client))

    stored_xcom = []
    from bulkchange_plugins.xcom import ScrubbedXCom

    for bulk_id, client in bulks:
        for summary in _run(engine, bulk_id, client):
            stored_xcom.append(json.dumps(ScrubbedXCom.serialize_value(summary, key="return_value"), default=str))
    # Rev.io: Basic user@client:password + subscription key; the right one answers, a wrong password is refused
    right = make_revio()
    with pytest.raises(Exception):
        right.get_service(999_999)  # a real authenticated call (no such service)
    rev_wrong = build_revio_client(CarrierSettings(simulator.url_for("revio"), f"{REV_USER}@{REV_CLIENT}", WRONG,
                                                   {"subscription_key": REV_KEY}), policy=_policy())
    try:
        rev_wrong.get_service(1)
    except Exception as exc:  # noqa: BLE001  refused: its message goes where errors go
        from bulkchange.db import bulk_changes
        from bulkchange.models import BulkStatus

        with engine.begin() as conn:
            bulk_changes.set_bulk_status(conn, bulks[0][0], BulkStatus.ERROR, error_message=str(exc))
    finally:
        rev_wrong.close()
    mails = []
    notify.dispatch(engine, send_email=lambda to, subject, body: mails.append(subject + body),
                    recipients=["ops@example.com"])

    held = set(sanitize.known_secrets())
    probes = {JASPER_KEY, WRONG, *ts_t.SECRETS, tg_t.SECRET, teal_t.SECRET, pond_t.SECRET, REV_PASSWORD, REV_KEY}
    assert probes <= held  # every client registered what it holds ...
    assert len(held - probes) >= 3  # ... and what it fetched (ThingSpace tokens, Basic credentials)
    with engine.connect() as conn:
        statuses = conn.execute(select(t.m2m_device_change.c.Status, t.m2m_device_change.c.StatusDetails)).all()
    assert any(s == "API_FAILED" for s, _ in statuses), statuses  # the wrong secrets did fail devices
    assert gateway.echoed >= 5  # and the gateway echoed the credentials back each time
    assert mails
    assert _scan_db(engine, held) == []
    assert [m for m in mails if _leaks(m, held)] == []
    assert [x for x in stored_xcom if _leaks(x, held)] == []
