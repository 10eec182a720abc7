"""The demo's bulk change through the core against the Jasper simulator over HTTP: its fleet has
communication plans, so the DEACTIVATED cheapest-plan-first rule runs, and the printed summary
counts the plan switches from the log rows."""
from bulkchange import processing
from bulkchange.carriers.jasper import JasperClient
from bulkchange.engine import CallPolicy, RateLimiter, RetryPolicy
from bulkchange_demo import demo

N = 28  # devices 0..27; the even ones have IOT-COMM, DataUsageMB = (i % 7) * 100


def test_demo_fleet_switches_plans_first_and_the_summary_counts_them(simulator, tmp_path, capsys, monkeypatch):
    control = simulator.control("jasper")
    control.reset()
    # the demo's key for the session simulator's "demo" account, only for this test: the account's
    # usual key is put back afterwards (other tests sign in with it)
    monkeypatch.setitem(simulator.carrier("jasper").accounts, demo.JASPER_USER, demo.JASPER_KEY)
    devices = demo.demo_devices(N)
    demo.seed_simulator(control, devices)
    url = f"sqlite:///{tmp_path / 'amop.db'}"
    bulk_id = demo.seed_amop(url, N)
    client = JasperClient(simulator.url_for("jasper"), demo.JASPER_USER, demo.JASPER_KEY,
                          policy=CallPolicy(RateLimiter(None), RetryPolicy(max_attempts=3, base_delay=0.05)))
    engine = demo.make_engine(url)
    try:
        plan = processing.prepare(engine, bulk_id, batch_size=10)
        for batch in plan.batches:
            processing.process_batch(engine, bulk_id, batch.device_change_ids, client=client)
        processing.finalize(engine, bulk_id)
    finally:
        client.close()
        engine.dispose()

    summary = demo.print_summary(url, bulk_id, control)
    out = capsys.readouterr().out
    # 14 devices have a communication plan; usage 0 -> IOT-SUSPEND-0 (i = 0, 14), 100..500 ->
    # IOT-SUSPEND-500 (10 devices), 600 MB only fits IOT-1GB, their plan already (i = 6, 20)
    assert "  rate plan switched first: 12 devices of 14 with a communication plan" in out
    assert "IOT-SUSPEND-0=2, IOT-SUSPEND-500=10" in out
    assert summary["status"] == "PROCESSED" and summary["rate_plan_switches"] == {"IOT-SUSPEND-0": 2,
                                                                                  "IOT-SUSPEND-500": 10}
    # the carrier agrees: each switched device has its new plan and is DEACTIVATED
    plan_puts = [c for c in control.calls(method="PUT") if "ratePlan" in (c.get("body") or {})]
    assert len(plan_puts) == 12
    for i, d in enumerate(devices):
        at_carrier = control.device(d["ICCID"])
        assert at_carrier["status"] == "DEACTIVATED"
        expected = d["CarrierRatePlan"] if not d["CommunicationPlan"] or i % 7 == 6 else \
            ("IOT-SUSPEND-0" if i % 7 == 0 else "IOT-SUSPEND-500")
        assert at_carrier["ratePlan"] == expected, (i, at_carrier)
