"""AMOP tables as SQLAlchemy Core objects, with the legacy SQL Server names.

Production (SQL Server) already has these tables; the names here must match so the pipeline can
be pointed at it. ``bulkchange.db.seed.create_schema`` builds them in an empty development/test
database (SQLite, PostgreSQL; on SQL Server it is only for a scratch database).

Columns we added to the legacy shape are marked ``# added``. Every table, column and index here
must also be created by a revision in ``migrations/versions`` (``bulkchange.db.migrate``; a test
compares the migrated database with this metadata): a change here needs a new revision
(docs/database.md).
"""
from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Numeric,
    String,
    Table,
    UnicodeText,
    text,
)
from sqlalchemy.engine import Connection, Engine

metadata = MetaData()

# Identity keys: BigInteger ids autoincrement as IDENTITY on SQL Server, SERIAL on PostgreSQL;
# on SQLite only INTEGER PRIMARY KEY autoincrements, so map BigInteger to Integer there.
Id = BigInteger().with_variant(Integer(), "sqlite")

device_change_request_type = Table(
    "DeviceChangeRequestType", metadata,
    Column("Id", Integer, primary_key=True, autoincrement=False),
    Column("Code", String(64), nullable=False, unique=True),
    Column("DisplayName", String(128)),
)

integration = Table(
    "Integration", metadata,
    Column("Id", Integer, primary_key=True, autoincrement=False),
    Column("Name", String(64), nullable=False, unique=True),
)

service_provider = Table(
    "ServiceProvider", metadata,
    Column("Id", Integer, primary_key=True, autoincrement=False),
    Column("Name", String(128), nullable=False),
    Column("IntegrationId", Integer, ForeignKey("Integration.Id"), nullable=False),
    Column("TenantId", Integer, nullable=False),
    Column("WriteIsEnabled", Boolean, nullable=False, default=True),
    Column("IsActive", Boolean, nullable=False, default=True),
    Column("Settings", UnicodeText),  # JSON, non-secret provider settings
    # added (0016): the site (AMOP customer) devices the provider onboards get (legacy
    # usp_Device_Bulk_Change_Set_Default_Site); NULL = none
    Column("DefaultSiteId", Integer),
)

device_status = Table(
    "DeviceStatus", metadata,
    Column("Id", Integer, primary_key=True, autoincrement=False),
    Column("IntegrationId", Integer, ForeignKey("Integration.Id")),
    Column("Status", String(64), nullable=False),
    Column("DisplayName", String(128)),
)

device_bulk_change = Table(
    "DeviceBulkChange", metadata,
    Column("Id", Id, primary_key=True, autoincrement=True),
    Column("TenantId", Integer, nullable=False),
    Column("ServiceProviderId", Integer, ForeignKey("ServiceProvider.Id"), nullable=False),
    Column("ChangeRequestTypeId", Integer, ForeignKey("DeviceChangeRequestType.Id"), nullable=False),
    Column("PortalTypeId", Integer, nullable=False, default=0),
    Column("ProcessChanges", Boolean, nullable=False, default=True),
    Column("Status", String(32), nullable=False, default="NEW"),
    Column("CreatedBy", String(128)),
    Column("CreatedDate", DateTime, nullable=False),
    Column("ProcessedDate", DateTime),
    Column("ErrorMessage", UnicodeText),
    Column("ModifiedDate", DateTime),  # added: last status change, for the progress view
    # added: device change counts, refreshed in the transaction of every step that settles devices,
    # so a portal can draw a progress bar (Processed + Error of Total done, Pending still open)
    Column("TotalCount", Integer),
    Column("ProcessedCount", Integer),
    Column("ErrorCount", Integer),
    Column("PendingCount", Integer),
    # added: the processing run that owns the bulk change (its lease). Owner = "bulk_change_process:<run id>";
    # renewed while the run works, released by its finalize; an expired lease (dead run) may be taken
    # over. NULL = nobody processes it. See docs/operations.md, "One run per bulk change".
    Column("LeaseOwner", String(300)),
    Column("LeaseExpiresDate", DateTime),
    Index("IX_DeviceBulkChange_Status", "Status", "ProcessChanges"),
    # added: the Bulk changes page lists newest first, filtered by provider or creation date
    Index("IX_DeviceBulkChange_ServiceProvider", "ServiceProviderId", "Id"),
    Index("IX_DeviceBulkChange_CreatedDate", "CreatedDate"),
)


# added: dry-run reports. A dry run validates and plans without changing anything else; its
# report (JSON) is kept here. BulkChangeId is NULL for a submission that was only dry-run.
device_bulk_change_dry_run = Table(
    "DeviceBulkChangeDryRun", metadata,
    Column("Id", Id, primary_key=True, autoincrement=True),
    Column("BulkChangeId", BigInteger),
    Column("ServiceProviderId", Integer),
    Column("ChangeRequestTypeId", Integer),
    Column("RequestedBy", String(128)),
    Column("Report", UnicodeText, nullable=False),
    Column("CreatedDate", DateTime, nullable=False),
    Index("IX_DeviceBulkChangeDryRun_BulkChange", "BulkChangeId"),
)


def _device_change_table(name: str) -> Table:
    return Table(
        name, metadata,
        Column("Id", Id, primary_key=True, autoincrement=True),
        Column("BulkChangeId", BigInteger, ForeignKey("DeviceBulkChange.Id"), nullable=False),
        Column("ICCID", String(32)),
        Column("MSISDN", String(32)),
        Column("IMEI", String(32)),
        Column("EID", String(64)),
        Column("DeviceIdentifier", String(64)),
        Column("DeviceId", BigInteger),
        Column("ChangeRequest", UnicodeText),
        Column("Status", String(32), nullable=False, default="NEW"),
        Column("StatusDetails", UnicodeText),
        Column("IsProcessed", Boolean, nullable=False, default=False),
        Column("ProcessedDate", DateTime),
        Column("ProcessedBy", String(128)),
        Column("IpAddress", String(64)),
        Column("LastModified", DateTime),
        Column("ServiceProviderId", Integer),
        Column("TenantId", Integer),
        Column("CarrierRequestId", String(128)),  # added: async carrier request being waited on
        # added: polls of that request so far (server default: the legacy portal inserts rows without it)
        Column("CarrierCheckCount", Integer, nullable=False, default=0, server_default=text("0")),
        Index(f"IX_{name}_BulkChange_Status", "BulkChangeId", "Status"),
        # added: the Bulk changes page pages a bulk change's device changes by Id, all or per status
        Index(f"IX_{name}_BulkChange_Status_Id", "BulkChangeId", "Status", "Id"),
        Index(f"IX_{name}_BulkChange_Id", "BulkChangeId", "Id"),
    )


m2m_device_change = _device_change_table("M2M_DeviceChange")
mobility_device_change = _device_change_table("Mobility_DeviceChange")
# added (0014): a ThingSpace callback finds the device changes waiting on its request
Index("IX_M2M_DeviceChange_SP_CarrierRequestId", m2m_device_change.c.ServiceProviderId,
      m2m_device_change.c.CarrierRequestId)

device = Table(
    "Device", metadata,
    Column("Id", Id, primary_key=True, autoincrement=True),
    Column("ICCID", String(32), nullable=False),
    Column("MSISDN", String(32)),
    Column("IMEI", String(32)),
    Column("EID", String(64)),
    Column("ServiceProviderId", Integer, ForeignKey("ServiceProvider.Id"), nullable=False),
    Column("TenantId", Integer, nullable=False),
    Column("DeviceStatusId", Integer),
    Column("Status", String(64)),
    Column("CarrierRatePlan", String(128)),
    Column("CommunicationPlan", String(128)),
    Column("CustomerRatePlanId", Integer),
    Column("CustomerPoolId", Integer),
    Column("Username", String(256)),
    # added (0019): legacy Device.DeviceDescription; a ThingSpace activation with the subscriber's
    # name writes its primary place of use here (JSON), as the legacy did
    Column("DeviceDescription", UnicodeText),
    Column("CostCenter1", String(128)),
    Column("CostCenter2", String(128)),
    Column("CostCenter3", String(128)),
    Column("IPAddress", String(64)),
    Column("DataUsageMB", Numeric(18, 4)),
    Column("CustomerDataAllocationMB", Numeric(18, 4)),  # legacy: set by customer rate plan changes
    Column("SiteId", Integer),  # legacy: the AMOP customer (site) the device is assigned to
    Column("RevCustomerId", String(64)),  # added: the Rev.io customer of a customer assignment
    Column("LastUsageDate", DateTime),  # added: last day with usage (archival refuses recent usage)
    Column("LastStatusChange", DateTime),
    Column("IsActive", Boolean, nullable=False, default=True),
    Column("IsDeleted", Boolean, nullable=False, default=False),
    Column("CreatedDate", DateTime),
    Column("ModifiedDate", DateTime),
    Index("IX_Device_ICCID", "ICCID"),
    Index("IX_Device_SP_Tenant", "ServiceProviderId", "TenantId"),
)

# The Mobility inventory (portal type 2): legacy MobilityDevice, one row per line. Mobility lines are
# known by their number (MSISDN; the legacy Telegence sync joins it to TelegenceDevice.SubscriberNumber)
# and may have no ICCID on record. Mobility bulk changes find and update their devices here, never in
# Device (tables.inventory_table). The columns are the ones the pipeline reads or writes.
mobility_device = Table(
    "MobilityDevice", metadata,
    Column("Id", Id, primary_key=True, autoincrement=True),
    Column("ICCID", String(32)),
    Column("MSISDN", String(32)),
    Column("IMEI", String(32)),
    Column("ServiceProviderId", Integer, ForeignKey("ServiceProvider.Id"), nullable=False),
    Column("TenantId", Integer, nullable=False),
    Column("DeviceStatusId", Integer),
    Column("Status", String(64)),
    Column("CarrierRatePlan", String(128)),
    Column("CustomerRatePlanId", Integer),
    Column("CustomerPoolId", Integer),
    Column("CustomerDataAllocationMB", Numeric(18, 4)),
    Column("Username", String(256)),
    Column("CostCenter1", String(128)),
    Column("CostCenter2", String(128)),
    Column("CostCenter3", String(128)),
    Column("IPAddress", String(64)),  # legacy: usp_Update_MobilityDevice_IPAddress
    Column("DataUsageMB", Numeric(18, 4)),
    Column("SiteId", Integer),  # legacy: usp_Assign_Customer_Update_Site
    Column("RevCustomerId", String(64)),  # added (0013): the Rev.io customer of a customer assignment
    Column("LastUsageDate", DateTime),  # added (0013): last day with usage (archival)
    Column("LastStatusChange", DateTime),
    Column("IsActive", Boolean, nullable=False, default=True),
    Column("IsDeleted", Boolean, nullable=False, default=False),
    Column("CreatedDate", DateTime),
    Column("ModifiedDate", DateTime),
    # added (0013): Mobility changes look lines up by number or SIM within the service provider
    Index("IX_MobilityDevice_SP_MSISDN", "ServiceProviderId", "MSISDN"),
    Index("IX_MobilityDevice_SP_ICCID", "ServiceProviderId", "ICCID"),
)

# Telegence's own view of a line (legacy TelegenceDevice, kept by the legacy Telegence sync,
# usp_Telegence_Update_Device): the subscriber's status letter and its DeviceStatus id, the accounts
# (FAN/BAN). A Telegence status change the pipeline makes is written here too, by subscriber number.
telegence_device = Table(
    "TelegenceDevice", metadata,
    Column("Id", Id, primary_key=True, autoincrement=True),
    Column("SubscriberNumber", String(32), nullable=False),
    Column("FoundationAccountNumber", String(64)),
    Column("BillingAccountNumber", String(64)),
    Column("DeviceStatusId", Integer),
    Column("OldDeviceStatusId", Integer),
    Column("SubscriberNumberStatus", String(32)),
    Column("BanStatus", String(32)),
    Column("ContractStatus", String(64)),
    Column("RefreshTimestamp", DateTime),
    Column("FailedSyncCount", Integer),
    Column("LastActivatedDate", DateTime),
    Column("ServiceProviderId", Integer),
    Column("CreatedBy", String(128)),
    Column("CreatedDate", DateTime),
    Column("ModifiedBy", String(128)),
    Column("ModifiedDate", DateTime),
    Column("IsActive", Boolean, nullable=False, default=True),
    Column("IsDeleted", Boolean, nullable=False, default=False),
    # legacy (TelegenceNewServiceActivation_Staging -> usp_Telegence_Update_NewServiceActivations_FromStaging):
    # the carrier rate pool and data group an ActivateNewService request names for the new line (0017)
    Column("CarrierRatePool", String(128)),
    Column("CarrierDataGroup", String(128)),
    # added (0013)
    Index("IX_TelegenceDevice_SP_SubscriberNumber", "ServiceProviderId", "SubscriberNumber"),
)

device_status_history = Table(
    "DeviceStatusHistory", metadata,
    Column("Id", Id, primary_key=True, autoincrement=True),
    Column("DeviceId", BigInteger),
    Column("ICCID", String(32)),
    Column("PreviousStatus", String(64)),
    Column("CurrentStatus", String(64)),
    Column("ChangedBy", String(128)),
    Column("BulkChangeId", BigInteger),
    Column("Source", String(64)),
    Column("ChangedDate", DateTime, nullable=False),
    # added (0013): a Mobility line's history row names its MobilityDevice (DeviceId is Device's id, NULL
    # then) and its number (a line may have no ICCID on record)
    Column("MobilityDeviceId", BigInteger),
    Column("MSISDN", String(32)),
    Index("IX_DeviceStatusHistory_Device", "DeviceId"),
)

# added (0015): carrier rate plan drift that reconciliation found (the carrier's plan differed from
# CarrierRatePlan); one row per drift, as DeviceStatusHistory holds status drift
device_rate_plan_history = Table(
    "DeviceRatePlanHistory", metadata,
    Column("Id", Id, primary_key=True, autoincrement=True),
    Column("DeviceId", BigInteger),
    Column("MobilityDeviceId", BigInteger),
    Column("ICCID", String(32)),
    Column("MSISDN", String(32)),
    Column("PreviousRatePlan", String(128)),
    Column("CurrentRatePlan", String(128)),
    Column("ChangedBy", String(128)),
    Column("Source", String(64)),
    Column("ChangedDate", DateTime, nullable=False),
    Index("IX_DeviceRatePlanHistory_Device", "DeviceId"),
)

# What a customer assignment changed on each device, with its effective date (legacy
# usp_DeviceBulkChange_UpdateDeviceHistory @bulkChangeId, @effectiveDate, run at the end of a
# CustomerAssignment; its text is not public, so this keeps what its inputs say: per device of the
# bulk change, the customer and customer rate plan/pool assigned and from when). Added in 0018.
device_assignment_history = Table(
    "DeviceAssignmentHistory", metadata,
    Column("Id", Id, primary_key=True, autoincrement=True),
    Column("BulkChangeId", BigInteger, nullable=False),
    Column("DeviceChangeId", BigInteger, nullable=False),
    Column("PortalTypeId", Integer, nullable=False),  # 0 M2M: DeviceId is Device.Id; 2 Mobility: MobilityDevice.Id
    Column("DeviceId", BigInteger),
    Column("ICCID", String(32)),
    Column("ServiceProviderId", Integer, nullable=False),
    Column("TenantId", Integer, nullable=False),
    Column("SiteId", Integer),
    Column("RevCustomerId", String(64)),
    Column("CustomerRatePlanId", Integer),
    Column("CustomerPoolId", Integer),
    Column("EffectiveDate", DateTime, nullable=False),
    Column("ChangedBy", String(128)),
    Column("CreatedDate", DateTime, nullable=False),
    Index("IX_DeviceAssignmentHistory_Device", "PortalTypeId", "DeviceId"),
    Index("IX_DeviceAssignmentHistory_BulkChange", "BulkChangeId"),
)

device_bulk_change_log = Table(
    "DeviceBulkChangeLog", metadata,
    Column("Id", Id, primary_key=True, autoincrement=True),
    Column("BulkChangeId", BigInteger, nullable=False),
    Column("M2MDeviceChangeId", BigInteger),
    Column("MobilityDeviceChangeId", BigInteger),
    Column("LogEntryDescription", String(512)),
    Column("ProcessBy", String(128)),
    Column("RequestText", UnicodeText),
    Column("ResponseText", UnicodeText),
    Column("ErrorText", UnicodeText),
    Column("HasErrors", Boolean, nullable=False, default=False),
    Column("ResponseStatus", String(32)),
    Column("CreatedDate", DateTime, nullable=False),
    # added (issue 12): one row per carrier attempt; these say which attempt of its call it was, how
    # long it took and what it did at the carrier (applied / refused / unknown). NULL on rows that are
    # no carrier call (validation, "Update AMOP") and on rows written before these columns existed.
    Column("AttemptNumber", Integer),
    Column("DurationMs", Integer),
    Column("Outcome", String(16)),
    Index("IX_DeviceBulkChangeLog_BulkChange", "BulkChangeId"),
    # added: the log rows of one device change (Bulk changes page)
    Index("IX_DeviceBulkChangeLog_M2MDeviceChange", "M2MDeviceChangeId"),
    Index("IX_DeviceBulkChangeLog_MobilityDeviceChange", "MobilityDeviceChangeId"),
)

# added: notification outbox. One row per channel and bulk change status change, written in the
# transaction that changes the status, so every place that changes a status (processing,
# reconciliation, claims) notifies exactly once; a sender claims PENDING rows and marks them SENT.
device_bulk_change_notification = Table(
    "DeviceBulkChangeNotification", metadata,
    Column("Id", Id, primary_key=True, autoincrement=True),
    Column("BulkChangeId", BigInteger, nullable=False),
    Column("Channel", String(16), nullable=False),  # webhook | email | username (EditUsernameCostCenter report)
    Column("FromStatus", String(32)),
    Column("ToStatus", String(32), nullable=False),
    Column("State", String(16), nullable=False, default="PENDING"),  # PENDING SENDING SENT FAILED SKIPPED
    Column("Attempts", Integer, nullable=False, default=0),
    Column("LastError", UnicodeText),
    Column("CreatedDate", DateTime, nullable=False),
    Column("ClaimedDate", DateTime),
    Column("SentDate", DateTime),
    Index("IX_DeviceBulkChangeNotification_State", "State", "BulkChangeId"),
)

jasper_carrier_rate_plan = Table(
    "JasperCarrierRatePlan", metadata,
    Column("Id", Id, primary_key=True, autoincrement=True),
    Column("ServiceProviderId", Integer, ForeignKey("ServiceProvider.Id"), nullable=False),
    Column("RatePlanCode", String(128), nullable=False),
    Column("CommunicationPlan", String(128)),
    Column("PlanMB", Numeric(18, 4), nullable=False),
    Column("BaseRate", Numeric(18, 4), nullable=False),
    Column("IsActive", Boolean, nullable=False, default=True),
)

# POND packages per device (legacy POND_ADD_DEVICE_CARRIER_RATE_PLAN: ICCID, PackageIds,
# PackageTypeId, Status, DataUsageRemainingInBytes, SP, ProcessedBy). One row per carrier package.
pond_device_carrier_rate_plan = Table(
    "PondDeviceCarrierRatePlan", metadata,
    Column("Id", Id, primary_key=True, autoincrement=True),
    Column("ICCID", String(32), nullable=False),
    Column("PackageId", String(64), nullable=False),
    Column("PackageTypeId", String(64)),
    Column("Status", String(32), nullable=False),  # ACTIVE | TERMINATED | PENDING
    Column("DataUsageRemainingInBytes", BigInteger),
    Column("ServiceProviderId", Integer, nullable=False),
    Column("ProcessedBy", String(128)),
    Column("CreatedDate", DateTime, nullable=False),
    Column("ModifiedDate", DateTime),
    Index("IX_PondDeviceCarrierRatePlan_SP_ICCID", "ServiceProviderId", "ICCID"),
)

# Rev.io billing services per device (legacy usp_RevService_Create_Service / _ServiceProduct).
rev_service = Table(
    "Rev_Service", metadata,
    Column("Id", Id, primary_key=True, autoincrement=True),
    Column("ServiceId", BigInteger, nullable=False),  # Rev.io service_id
    Column("CustomerId", String(64), nullable=False),  # Rev.io customer_id
    Column("Number", String(64)),
    Column("Number2", String(64)),  # ICCID, as the legacy code sent it
    Column("ServiceTypeId", Integer),
    Column("ProviderId", Integer),
    Column("UsagePlanGroupId", Integer),
    Column("PackageId", Integer),
    Column("ActivatedDate", DateTime),
    Column("DisconnectedDate", DateTime),
    Column("DeviceId", BigInteger),
    Column("ServiceProviderId", Integer),
    Column("IntegrationAuthenticationId", Integer),
    Column("Username", String(256)),
    Column("CostCenter1", String(128)),
    Column("CostCenter2", String(128)),
    Column("CostCenter3", String(128)),
    Column("BulkChangeId", BigInteger),  # added: the bulk change that created it
    Column("DeviceChangeId", BigInteger),  # added: the device change that created it
    Column("IsActive", Boolean, nullable=False, default=True),
    Column("CreatedDate", DateTime, nullable=False),
    Index("IX_Rev_Service_Device", "DeviceId"),
    Index("IX_Rev_Service_ServiceId", "ServiceId"),
)

rev_service_product = Table(
    "Rev_ServiceProduct", metadata,
    Column("Id", Id, primary_key=True, autoincrement=True),
    Column("ServiceProductId", BigInteger, nullable=False),  # Rev.io service_product_id
    Column("ServiceId", BigInteger, nullable=False),
    Column("CustomerId", String(64)),
    Column("ProductId", BigInteger, nullable=False),
    Column("PackageId", Integer),
    Column("Rate", Numeric(25, 4)),
    Column("Quantity", Integer),
    Column("Description", String(256)),
    Column("Status", String(32)),
    Column("DeviceId", BigInteger),
    Column("BulkChangeId", BigInteger),  # added
    Column("DeviceChangeId", BigInteger),  # added
    Column("CreatedDate", DateTime, nullable=False),
    Index("IX_Rev_ServiceProduct_Service", "ServiceId"),
)


# Future-dated customer rate plan / pool changes (legacy Device_CustomerRatePlanOrRatePool_Queue:
# DeviceId, CustomerRatePlanId, CustomerRatePoolId, CustomerDataAllocationMB, EffectiveDate,
# PortalType, TenantId, CreatedBy, CreatedDate, IsActive). A scheduled run applies every active row
# whose EffectiveDate has come, marks its device change PROCESSED and clears IsActive.
device_customer_rate_plan_queue = Table(
    "Device_CustomerRatePlanOrRatePool_Queue", metadata,
    Column("Id", Id, primary_key=True, autoincrement=True),
    Column("DeviceId", BigInteger, nullable=False),
    Column("CustomerRatePlanId", Integer),
    Column("CustomerRatePoolId", Integer),
    Column("CustomerDataAllocationMB", Numeric(18, 4)),
    Column("EffectiveDate", DateTime, nullable=False),
    Column("PortalType", Integer, nullable=False, default=0),
    Column("TenantId", Integer, nullable=False),
    Column("CreatedBy", String(128)),
    Column("CreatedDate", DateTime, nullable=False),
    Column("IsActive", Boolean, nullable=False, default=True),
    Column("ServiceProviderId", Integer),  # added
    Column("BulkChangeId", BigInteger),  # added: the bulk change that queued it
    Column("DeviceChangeId", BigInteger),  # added: the device change it settles
    Column("AppliedDate", DateTime),  # added: when the scheduled run applied it
    Index("IX_Device_CustomerRatePlanOrRatePool_Queue_Due", "IsActive", "EffectiveDate"),
)


# Telegence mobility features (offering codes) of a line, as the carrier reports them after a new
# service activation (legacy TelegenceDeviceMobilityFeature, filled from its _Staging table). One row
# per device and offering code.
telegence_device_mobility_feature = Table(
    "TelegenceDeviceMobilityFeature", metadata,
    Column("Id", Id, primary_key=True, autoincrement=True),
    Column("DeviceId", BigInteger),
    Column("ICCID", String(32)),
    Column("SubscriberNumber", String(32)),
    Column("OfferingCode", String(64), nullable=False),
    Column("ServiceProviderId", Integer, nullable=False),
    Column("BulkChangeId", BigInteger),
    Column("CreatedDate", DateTime, nullable=False),
    Index("IX_TelegenceDeviceMobilityFeature_Device", "DeviceId"),
)


# Tenant-owned references a change request may name (legacy AMOP lookups, reduced to the columns
# the pipeline reads: which tenant owns the id). A device change naming an id of another tenant,
# or one that does not exist, is refused before anything is changed (bulkchange.tenancy).
site = Table(  # legacy: the AMOP customer ("site") a device is assigned to
    "Site", metadata,
    Column("Id", Integer, primary_key=True, autoincrement=False),
    Column("TenantId", Integer, nullable=False),
    Column("Name", String(256)),
    Column("RevCustomerId", String(64)),
    Column("IsActive", Boolean, nullable=False, default=True),
    Index("IX_Site_Tenant", "TenantId"),
)

customer_rate_plan = Table(
    "CustomerRatePlan", metadata,
    Column("Id", Integer, primary_key=True, autoincrement=False),
    Column("TenantId", Integer, nullable=False),
    Column("RatePlanName", String(256)),
    Column("IsActive", Boolean, nullable=False, default=True),
    Index("IX_CustomerRatePlan_Tenant", "TenantId"),
)

customer_rate_pool = Table(
    "CustomerRatePool", metadata,
    Column("Id", Integer, primary_key=True, autoincrement=False),
    Column("TenantId", Integer, nullable=False),
    Column("Name", String(256)),
    Column("IsActive", Boolean, nullable=False, default=True),
    Index("IX_CustomerRatePool_Tenant", "TenantId"),
)

rev_customer = Table(  # legacy: the Rev.io customers synced into AMOP, per tenant
    "RevCustomer", metadata,
    Column("Id", Id, primary_key=True, autoincrement=True),
    Column("RevCustomerId", String(64), nullable=False),
    Column("TenantId", Integer, nullable=False),
    Column("CustomerName", String(256)),
    Column("IsActive", Boolean, nullable=False, default=True),
    Index("IX_RevCustomer_RevCustomerId", "RevCustomerId"),
)


# legacy: what ThingSpace posted to the CarrierService callback, one row per callback (per device of
# a request), read by the settlement of the device changes waiting on that request. APIResponse is the
# callback body as received, scrubbed like DeviceBulkChangeLog texts (the echoed credentials removed,
# personal fields masked).
thingspace_callback_response_log = Table(
    "ThingSpaceCallBackResponseLog", metadata,
    Column("Id", Id, primary_key=True, autoincrement=True),
    Column("RequestId", String(128), nullable=False),
    Column("TenantId", Integer),
    Column("ServiceProviderId", Integer, nullable=False),
    Column("APIStatus", String(32)),
    Column("APIResponse", UnicodeText),
    Column("CreatedDate", DateTime, nullable=False),
    Column("ICCID", String(32)),  # added: the device the callback reports on (a request may name many)
    Index("IX_ThingSpaceCallBackResponseLog_SP_RequestId", "ServiceProviderId", "RequestId"),
)


def drop_schema(bind: Engine | Connection) -> None:
    metadata.drop_all(bind)
