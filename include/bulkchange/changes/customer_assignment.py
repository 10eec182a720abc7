"""CustomerAssignment ("associate customer") and CreateRevService, on every carrier; no carrier call.

Per device change, in this order (legacy ADBC §3.5 / §3.7, each device with its own request):

1. **Rev.io service** when the request names a ``RevCustomerId`` and asks for it
   (``CreateRevService: true``; always for the CreateRevService change type): the service and its
   service products, found or created exactly once by the batch's Rev.io step
   (``changes/revio_service.RevioServiceStep.ensure``, the same code as after a status change, through
   the service provider's ``revio_sp_<N>`` connection). Their ids go to ``Rev_Service`` /
   ``Rev_ServiceProduct`` with the device id: that row is the device's service link. A Rev.io failure
   is ``API_FAILED`` with the reason and nothing is written to ``Device``.
2. **Customer** on ``Device``: ``RevCustomerId`` (Rev.io customer) and/or ``SiteId`` (the AMOP
   customer; the only thing written when there is no Rev.io customer: DB only, as legacy
   ``usp_DeviceBulkChange_Assign_Non_Rev_Customer``).
3. **Customer rate plan / pool** (``CustomerRatePlanId``, ``CustomerPoolId``,
   ``CustomerDataAllocationMB``) as CustomerRatePlanChange does: at once, or with a future
   ``EffectiveDate`` queued; the device change then waits as ``SCHEDULED`` (the customer and the
   Rev.io service are already done) and ``customer_rate_plan_scheduler`` settles it on the date.

4. **Device history** (CustomerAssignment only; legacy ``usp_DeviceBulkChange_UpdateDeviceHistory``
   with the bulk change and its effective date): one ``DeviceAssignmentHistory`` row per device the
   assignment changed (PROCESSED, or SCHEDULED with its customer written): the customer (``SiteId``,
   ``RevCustomerId``), the customer rate plan / pool and the ``EffectiveDate`` (now when none), in
   the transaction that records the device change. Refused and failed devices leave none.

A retried task finds the Rev.io service an earlier attempt created (search before create) and
the DB writes happen in the batch's transaction, so nothing is done twice.
"""
from __future__ import annotations

from typing import Any, ClassVar

from sqlalchemy.engine import Connection

from bulkchange.carriers.base import CallLog
from bulkchange.changes.base import device_not_found
from bulkchange.changes.customer_rate_plan import CustomerRatePlanChange, Scheduled, check_plan_fields, describe, plan_updates
from bulkchange.changes.revio_service import rev_plan
from bulkchange.db.assignment_history import record_assignment_history
from bulkchange.db.bulk_devices import active_rev_services
from bulkchange.db import device_changes
from bulkchange.db.inventory import DeviceRow
from bulkchange.models import (
    BulkChange,
    ChangeType,
    CreateRevServiceRequest,
    CustomerAssignmentRequest,
    DeviceChange,
    DeviceChangeStatus,
    DeviceResult,
    utcnow,
)
from bulkchange.rules import RuleError


class CustomerAssignment(CustomerRatePlanChange):
    request_model = CustomerAssignmentRequest
    needs_carrier: ClassVar[bool] = False

    @classmethod
    def load_context(cls, conn: Connection, bulk: BulkChange) -> dict[str, Any]:
        return {"rev_services": active_rev_services(conn, bulk)}

    def creates_service(self, request: CustomerAssignmentRequest) -> bool:
        return self.bulk.change_type == ChangeType.CREATE_REV_SERVICE or request.CreateRevService

    def validate(self, dc: DeviceChange, request: CustomerAssignmentRequest, device: DeviceRow | None) -> None:
        if device is None:
            raise RuleError(device_not_found(dc, self.bulk))
        check_plan_fields(request)
        if self.creates_service(request):
            if not request.RevCustomerId:
                raise RuleError(f"{self.bulk.change_type.value}: RevCustomerId is missing, so no Rev.io service "
                                f"can be created")
            if rev_plan(request) is None:  # RuleError when the Rev.io fields are unusable
                raise RuleError("Rev.io service requested but the request has no Rev.io fields")
            # the legacy portal refused devices that already have a service line (of another customer;
            # one of the same customer is found again and reused)
            other = [(sid, cust) for sid, cust in self.context.get("rev_services", {}).get(device.id, [])
                     if cust != str(request.RevCustomerId)]
            if other:
                raise RuleError(f"device {device.iccid} already has active Rev.io service "
                                f"{other[0][0]} of customer {other[0][1]}; disconnect it first")
        elif not (request.RevCustomerId or request.SiteId is not None or self._plan(request)):
            raise RuleError("nothing to assign: the request names no RevCustomerId, SiteId, CustomerRatePlanId, "
                            "CustomerPoolId or CustomerDataAllocationMB")

    @staticmethod
    def _plan(request: CustomerAssignmentRequest) -> dict[str, Any]:
        return plan_updates(request.CustomerRatePlanId, request.CustomerPoolId, request.CustomerDataAllocationMB)

    def apply(self, dc: DeviceChange, request: CustomerAssignmentRequest, device: DeviceRow | None, *,
              verify_first: bool, log: CallLog) -> DeviceResult:
        assert device is not None  # validate() ran first
        base = dict(device_change_id=dc.id, device_id=device.id, iccid=device.iccid,
                    previous_device_status=device.status)
        done: list[str] = []
        if self.creates_service(request):
            if self.rev_step is None:
                return DeviceResult(status=DeviceChangeStatus.API_FAILED, **base,
                                    details="Rev.io service not created: no Rev.io step in this run")
            ok, text = self.rev_step.ensure(dc, rev_plan(request), device, device_id=device.id, log=log)
            if not ok:
                return DeviceResult(status=DeviceChangeStatus.API_FAILED, **base,
                                    details=f"{text}; customer not assigned")
            done.append(text)
        customer: dict[str, Any] = {}
        if request.RevCustomerId:
            customer["RevCustomerId"] = request.RevCustomerId
        if request.SiteId is not None:
            customer["SiteId"] = request.SiteId or None
        if customer:
            done.append(f"customer assigned: {describe(customer)}")
        plan = self._plan(request)
        now = self.context.get("now") or utcnow()
        if plan and request.EffectiveDate is not None and request.EffectiveDate > now:
            with self._lock:
                self.scheduled[dc.id] = Scheduled(dc.id, device.id, request.CustomerRatePlanId, request.CustomerPoolId,
                                                  request.CustomerDataAllocationMB, request.EffectiveDate)
            done.append(f"customer rate plan scheduled for {request.EffectiveDate:%Y-%m-%d %H:%M} UTC: "
                        f"{describe(plan)}")
            # the customer is written now (record); the device change settles on the effective date
            return DeviceResult(status=DeviceChangeStatus.SCHEDULED, **base, device_updates=customer,
                                details="; ".join(done), extra=self._history(request, customer))
        if plan:
            done.append(f"customer rate plan updated: {describe(plan)}")
        return DeviceResult(status=DeviceChangeStatus.PROCESSED, **base, device_updates={**customer, **plan},
                            details="; ".join(done), extra=self._history(request, customer))

    def _history(self, request: CustomerAssignmentRequest, customer: dict[str, Any]) -> dict[str, Any]:
        """What the device history row of this device says (step 4 of the module docstring)."""
        return {"history": {"SiteId": customer.get("SiteId"), "RevCustomerId": customer.get("RevCustomerId"),
                            "CustomerRatePlanId": request.CustomerRatePlanId or None,
                            "CustomerPoolId": request.CustomerPoolId or None,
                            "EffectiveDate": request.EffectiveDate}}

    def record(self, conn: Connection, results: list[DeviceResult], *, processed_by: str) -> None:
        super().record(conn, results, processed_by=processed_by)  # queue the future-dated plans
        early = [r for r in results if r.status == DeviceChangeStatus.SCHEDULED and r.device_updates
                 and r.device_id is not None]
        if early:
            device_changes._apply_device_updates(conn, early, utcnow())
        if self.bulk.change_type == ChangeType.CUSTOMER_ASSIGNMENT:
            record_assignment_history(conn, [
                {"BulkChangeId": self.bulk.id, "DeviceChangeId": r.device_change_id,
                 "PortalTypeId": int(self.bulk.portal_type.value), "DeviceId": r.device_id, "ICCID": r.iccid,
                 "ServiceProviderId": self.bulk.service_provider_id, "TenantId": self.bulk.tenant_id,
                 **r.extra["history"]}
                for r in results if r.status in (DeviceChangeStatus.PROCESSED, DeviceChangeStatus.SCHEDULED)
                and "history" in r.extra], changed_by=processed_by, now=utcnow())


class CreateRevService(CustomerAssignment):
    request_model = CreateRevServiceRequest
