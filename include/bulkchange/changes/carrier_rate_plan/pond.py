"""CarrierRatePlanChange on POND (legacy_behaviour.md 3.6).

* **POND**: the package flow the POND status update also uses (``pond_common.PondPackageHandler``;
  without the status update's "enable services": a rate plan change does not change the SIM's status): the
  package type ``RatePlanId`` (else ``CarrierRatePlan``) is kept or added, set ACTIVE, every other
  live package terminated; if that fails, a package this attempt added is terminated again and the
  device is API_FAILED. Packages go to ``PondDeviceCarrierRatePlan``. Listing the packages first
  makes a retried device add nothing twice.
"""
from __future__ import annotations

from bulkchange.carriers.base import CallLog, CarrierError
from bulkchange.changes.base import device_not_found, failed_result
from bulkchange.changes.carrier_rate_plan.common import CarrierPlanCheck, plan_done, stripped
from bulkchange.changes.pond_common import PondPackageHandler
from bulkchange.db.carrier_records import PondPackage
from bulkchange.db.inventory import DeviceRow
from bulkchange.models import CarrierRatePlanChangeRequest, DeviceChange, DeviceResult
from bulkchange.rules import RuleError


class PondCarrierRatePlan(CarrierPlanCheck, PondPackageHandler):
    request_model = CarrierRatePlanChangeRequest
    plan_lister = "package_type_ids"  # GET /{distributorId}/package-types, the ACTIVE ones
    plan_field = "RatePlanId (POND package type)"

    @staticmethod
    def package_type(request: CarrierRatePlanChangeRequest) -> str:
        return stripped(request.RatePlanId) or stripped(request.CarrierRatePlan)

    def validate(self, dc: DeviceChange, request: CarrierRatePlanChangeRequest, device: DeviceRow | None) -> None:
        if device is None:
            raise RuleError(device_not_found(dc, self.bulk))
        if not self.package_type(request):
            raise RuleError("RatePlanId (the POND package type) or CarrierRatePlan is required")
        self._check_carrier_plan(self.package_type(request))

    def apply(self, dc: DeviceChange, request: CarrierRatePlanChangeRequest, device: DeviceRow | None, *,
              verify_first: bool, log: CallLog) -> DeviceResult:
        assert device is not None
        type_id = self.package_type(request)
        touched: list[PondPackage] = []
        try:
            kept = self._activate(device.iccid, type_id, touched, log)
        except CarrierError as exc:
            return failed_result(dc, device, exc, f"Change Pond package to type {type_id}")
        finally:
            self._keep(dc, touched)
        return plan_done(dc, device, type_id, f"package {kept} (type {type_id}) is the only ACTIVE package")
