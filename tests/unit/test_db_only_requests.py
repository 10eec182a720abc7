"""Request models of the DB-only change types: portal key spellings, nesting, dates in UTC, errors."""
from datetime import datetime
from decimal import Decimal

import pytest

from bulkchange.changes.revio_service import rev_plan
from bulkchange.models import ChangeType, RequestParseError, parse_change_request


def test_customer_rate_plan_nested_camel_case_and_utc():
    r = parse_change_request(ChangeType.CUSTOMER_RATE_PLAN_CHANGE, {"customerRatePlanUpdate": {
        "customerRatePlanId": 456, "customerDataAllocationMB": 1024, "customerRatePoolId": 789,
        "effectiveDate": "2024-01-01T02:00:00+02:00"}})
    assert (r.CustomerRatePlanId, r.CustomerPoolId, r.CustomerDataAllocationMB) == (456, 789, Decimal(1024))
    assert r.EffectiveDate == datetime(2024, 1, 1, 0, 0)
    flat = parse_change_request(ChangeType.CUSTOMER_RATE_PLAN_CHANGE, '{"CustomerPoolId": 3, "EffectiveDate": ""}')
    assert (flat.CustomerPoolId, flat.EffectiveDate, flat.CustomerRatePlanId) == (3, None, None)


@pytest.mark.parametrize("raw, field", [
    ({"CustomerRatePlanId": "x"}, "CustomerRatePlanId"),
    ({"EffectiveDate": "2024-13-45"}, "EffectiveDate"),
    ({"CustomerDataAllocationMB": -1}, "CustomerDataAllocationMB"),
])
def test_customer_rate_plan_errors_name_the_field(raw, field):
    with pytest.raises(RequestParseError, match=field):
        parse_change_request(ChangeType.CUSTOMER_RATE_PLAN_CHANGE, raw)


def test_archival_override_spellings():
    assert parse_change_request(ChangeType.ARCHIVAL, {}).OverrideValidation is False
    assert parse_change_request(ChangeType.ARCHIVAL, {"overrideValidation": True}).OverrideValidation is True
    assert parse_change_request(ChangeType.ARCHIVAL, {"IsOverrideValidation": "true"}).OverrideValidation is True


def test_customer_assignment_flat_rev_fields_become_the_rev_block():
    r = parse_change_request(ChangeType.CUSTOMER_ASSIGNMENT, {
        "revCustomerId": 4711, "createRevService": True, "ProviderId": 3, "RevProductIdList": "501,502",
        "RateList": "9.99,1.5", "CustomerRatePlan": 12, "CustomerRatePool": 34})
    assert (r.RevCustomerId, r.CreateRevService, r.CustomerRatePlanId, r.CustomerPoolId) == ("4711", True, 12, 34)
    plan = rev_plan(r)
    assert (plan.customer_id, plan.provider_id) == (4711, 3)
    assert plan.products == [(501, Decimal("9.99")), (502, Decimal("1.5"))]
    # CreateRevService defaults: off for an assignment, on for CreateRevService
    assert parse_change_request(ChangeType.CUSTOMER_ASSIGNMENT, {"RevCustomerId": "1"}).CreateRevService is False
    assert parse_change_request(ChangeType.CREATE_REV_SERVICE, {"RevCustomerId": "1"}).CreateRevService is True
    blocks = parse_change_request(ChangeType.CREATE_REV_SERVICE, {"RevServiceProductCreateModel": {
        "RevCustomerId": 9, "ProviderId": 2}})
    assert blocks.RevService is None and rev_plan(blocks).customer_id == 9
    assert blocks.RevCustomerId == "9"  # named inside the block only
