"""CreatedBy is the triggering user; the optional per-user service provider list."""
from bulkchange import authz


def test_created_by_is_the_triggering_user():
    assert authz.created_by("alice", "") == "alice"
    assert authz.created_by("alice", "airflow") == "alice"
    assert authz.created_by("alice", "bob") == "alice (for bob)"
    assert authz.created_by(None, "portal-import") == "portal-import"  # no user: Airflow started it
    assert len(authz.created_by("a" * 200, "b")) == 128


def test_service_providers_per_user():
    allowed = {"alice": [1, 6], "*": [1]}
    assert authz.service_provider_problem("alice", 6, allowed) is None
    assert "may not act on service provider 12" in authz.service_provider_problem("alice", 12, allowed)
    assert authz.service_provider_problem("carol", 1, allowed) is None  # "*"
    assert "service provider 6" in authz.service_provider_problem("carol", 6, allowed)
    assert "not listed" in authz.service_provider_problem("carol", 1, {"alice": [1]})
    assert authz.service_provider_problem("anyone", 99, None) is None  # no Variable: nobody limited
    assert authz.service_provider_problem(None, 99, allowed) is None  # sensor / SQS runs
