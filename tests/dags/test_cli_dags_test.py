"""The README's by-hand run, exactly as an operator types it: ``airflow dags test bulk_change_process
-c '{"bulk_change_id": N}'`` in its own process, on a 1,000-device Jasper suspend."""
import json
import os
import subprocess
import sys
from collections import Counter

import pytest
from sqlalchemy import func, select

from bulkchange.db import bulk_changes, progress
from bulkchange.db import schema as t
from bulkchange.db import seed
from bulkchange.models import ChangeType, Integration
from tests.dags.conftest import ROOT, amop_conn_json

pytestmark = pytest.mark.airflow
N = 1000
KEY = "cli-secret-api-key-1000"


def test_airflow_dags_test_cli_processes_every_device_once(dagbag, sqlite_engine, simulator):
    jasper = simulator.control("jasper")
    jasper.reset()
    simulator.set_account("jasper", "cli", KEY)
    iccids = [seed.make_iccid(400_000 + i) for i in range(N)]
    jasper.seed_devices([{"iccid": i, "status": "ACTIVATED", "ratePlan": "IOT-1GB"} for i in iccids])
    with sqlite_engine.begin() as conn:
        seed.add_service_provider(conn, sp_id=1, name="cli", integration=Integration.JASPER, tenant_id=1)
        seed.add_devices(conn, [{"ICCID": i, "Status": "ACTIVATED"} for i in iccids], sp_id=1, tenant_id=1)
        bulk_id = seed.add_bulk_change(conn, sp_id=1, tenant_id=1, change_type=ChangeType.STATUS_UPDATE,
                                       requests=[{"ICCID": i, "ChangeRequest": {"UpdateStatus": "Suspend"}}
                                                 for i in iccids])
    env = dict(os.environ,
               AIRFLOW_CONN_AMOP_DB=amop_conn_json(sqlite_engine),
               AIRFLOW_CONN_CARRIER_SP_1=json.dumps({"conn_type": "http", "host": simulator.url_for("jasper"),
                                                     "login": "cli", "password": KEY}),
               PYTHONPATH=os.pathsep.join([str(ROOT / "include"), str(ROOT / "plugins")]))
    done = subprocess.run([sys.executable, "-m", "airflow", "dags", "test", "bulk_change_process",
                           "-c", json.dumps({"bulk_change_id": bulk_id})],
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert KEY not in done.stdout + done.stderr

    with sqlite_engine.connect() as conn:
        bulk = bulk_changes.load_bulk_change(conn, bulk_id)
        assert bulk.status.value == "PROCESSED"
        assert progress.status_counts(conn, bulk) == {"PROCESSED": N}
        assert conn.execute(select(t.device.c.Status, func.count()).group_by(t.device.c.Status)).all() == \
            [("DEACTIVATED", N)]
        assert conn.execute(select(func.count()).select_from(t.device_status_history)).scalar_one() == N
        logs = conn.execute(select(t.device_bulk_change_log.c.RequestText,
                                   t.device_bulk_change_log.c.ResponseText)).all()
    assert len(logs) == N
    assert not [r for r in logs if KEY in r[0] + r[1] or "Authorization" in r[0] + r[1]]
    status_changes = Counter(c["iccid"] for c in jasper.calls(method="PUT") if c["body"].get("status"))
    assert status_changes == Counter({i: 1 for i in iccids})  # exactly one status change per device
