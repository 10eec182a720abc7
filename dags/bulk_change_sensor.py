"""bulk_change_sensor: find NEW bulk changes, claim each exactly once, launch processing.

The claim is one conditional UPDATE (NEW -> PENDING): of two overlapping sensor runs only one
wins each bulk change, and the launched run id ``bulk_change_<id>`` is unique as a second guard.
A claim still PENDING after ``BULKCHANGE_STALE_CLAIM_MINUTES`` lost its launch (the trigger failed
after the claim): it is re-claimed the same way and launched again; if its run does exist, the
trigger skips it, so nothing runs twice.
"""
from __future__ import annotations

from datetime import timedelta

from airflow.sdk import PokeReturnValue, dag, task

import bulkchange_plugins  # noqa: F401
from bulkchange_plugins.dag_common import dag_args, launch_processing, processing_launch
from bulkchange.settings import get_settings

settings = get_settings()
SCHEDULE_MINUTES = settings.sensor_every_minutes
CLAIM_LIMIT = settings.claim_limit
# A claim whose processing has not started after this long lost its launch: launch it again.
STALE_CLAIM_MINUTES = settings.stale_claim_minutes


@dag(
    dag_id="bulk_change_sensor",
    description="Claim NEW bulk changes from the AMOP database and launch bulk_change_process for each",
    **dag_args(every_minutes=SCHEDULE_MINUTES, retries=1, retry_delay=timedelta(seconds=20)),
    doc_md=__doc__,
)
def bulk_change_sensor():
    @task.sensor(poke_interval=15, timeout=SCHEDULE_MINUTES * 60 - 10, mode="reschedule", soft_fail=True)
    def wait_for_new_bulk_changes() -> PokeReturnValue:
        from bulkchange.db import claims
        from bulkchange_plugins.hooks import AmopHook

        from bulkchange.models import utcnow

        cutoff = utcnow() - timedelta(minutes=STALE_CLAIM_MINUTES)
        with AmopHook().get_engine().connect() as conn:
            ids = claims.find_new_bulk_change_ids(conn, CLAIM_LIMIT)
            stale = claims.find_stale_claims(conn, cutoff, CLAIM_LIMIT)
        return PokeReturnValue(is_done=bool(ids or stale), xcom_value={"new": ids, "stale": stale})

    @task
    def claim(candidates: dict) -> list[dict]:
        from bulkchange.db import claims
        from bulkchange.models import utcnow
        from bulkchange_plugins.hooks import AmopHook

        engine = AmopHook().get_engine()
        won = claims.claim_each(engine, candidates["new"])  # of two overlapping runs, one wins each
        print(f"claimed {won} of NEW candidates {candidates['new']}")
        if candidates["stale"]:
            # the run id is deterministic: a run that does exist is skipped, a lost one is created
            again = claims.reclaim_stale(engine, utcnow() - timedelta(minutes=STALE_CLAIM_MINUTES), CLAIM_LIMIT)
            print(f"re-launching stale claims {again}")
            won.extend(i for i in again if i not in won)
        return [processing_launch(i) for i in won]

    launches = claim(wait_for_new_bulk_changes())
    launch_processing(launches)


bulk_change_sensor()
