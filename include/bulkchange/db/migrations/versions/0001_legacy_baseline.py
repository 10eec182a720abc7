"""Baseline: the legacy AMOP tables as production has them (the columns the pipeline uses).

On a production AMOP database these tables already exist: the DBA marks this revision as
applied (``./run db stamp 0001_legacy_baseline``) and never runs it. On a development or test
database it creates them. Nothing here is ours: every table and column the pipeline added is in
a later revision.

Revision ID: 0001_legacy_baseline
Revises:
Create Date: 2026-11-30
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001_legacy_baseline"
down_revision = None
branch_labels = None
depends_on = None

# Identity keys: IDENTITY on SQL Server, SERIAL on PostgreSQL; on SQLite only INTEGER PRIMARY KEY
# autoincrements.
Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _id() -> sa.Column:
    return sa.Column("Id", Id, primary_key=True, autoincrement=True)


def _device_change_table(name: str) -> None:
    op.create_table(
        name,
        _id(),
        sa.Column("BulkChangeId", sa.BigInteger, sa.ForeignKey("DeviceBulkChange.Id"), nullable=False),
        sa.Column("ICCID", sa.String(32)),
        sa.Column("MSISDN", sa.String(32)),
        sa.Column("IMEI", sa.String(32)),
        sa.Column("EID", sa.String(64)),
        sa.Column("DeviceIdentifier", sa.String(64)),
        sa.Column("DeviceId", sa.BigInteger),
        sa.Column("ChangeRequest", sa.UnicodeText),
        sa.Column("Status", sa.String(32), nullable=False),
        sa.Column("StatusDetails", sa.UnicodeText),
        sa.Column("IsProcessed", sa.Boolean, nullable=False),
        sa.Column("ProcessedDate", sa.DateTime),
        sa.Column("ProcessedBy", sa.String(128)),
        sa.Column("IpAddress", sa.String(64)),
        sa.Column("LastModified", sa.DateTime),
        sa.Column("ServiceProviderId", sa.Integer),
        sa.Column("TenantId", sa.Integer),
    )
    op.create_index(f"IX_{name}_BulkChange_Status", name, ["BulkChangeId", "Status"])


def upgrade() -> None:
    op.create_table(
        "DeviceChangeRequestType",
        sa.Column("Id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("Code", sa.String(64), nullable=False, unique=True),
        sa.Column("DisplayName", sa.String(128)),
    )
    op.create_table(
        "Integration",
        sa.Column("Id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("Name", sa.String(64), nullable=False, unique=True),
    )
    op.create_table(
        "ServiceProvider",
        sa.Column("Id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("Name", sa.String(128), nullable=False),
        sa.Column("IntegrationId", sa.Integer, sa.ForeignKey("Integration.Id"), nullable=False),
        sa.Column("TenantId", sa.Integer, nullable=False),
        sa.Column("WriteIsEnabled", sa.Boolean, nullable=False),
        sa.Column("IsActive", sa.Boolean, nullable=False),
        sa.Column("Settings", sa.UnicodeText),
    )
    op.create_table(
        "DeviceStatus",
        sa.Column("Id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("IntegrationId", sa.Integer, sa.ForeignKey("Integration.Id")),
        sa.Column("Status", sa.String(64), nullable=False),
        sa.Column("DisplayName", sa.String(128)),
    )
    op.create_table(
        "DeviceBulkChange",
        _id(),
        sa.Column("TenantId", sa.Integer, nullable=False),
        sa.Column("ServiceProviderId", sa.Integer, sa.ForeignKey("ServiceProvider.Id"), nullable=False),
        sa.Column("ChangeRequestTypeId", sa.Integer, sa.ForeignKey("DeviceChangeRequestType.Id"), nullable=False),
        sa.Column("PortalTypeId", sa.Integer, nullable=False),
        sa.Column("ProcessChanges", sa.Boolean, nullable=False),
        sa.Column("Status", sa.String(32), nullable=False),
        sa.Column("CreatedBy", sa.String(128)),
        sa.Column("CreatedDate", sa.DateTime, nullable=False),
        sa.Column("ProcessedDate", sa.DateTime),
        sa.Column("ErrorMessage", sa.UnicodeText),
    )
    op.create_index("IX_DeviceBulkChange_Status", "DeviceBulkChange", ["Status", "ProcessChanges"])
    _device_change_table("M2M_DeviceChange")
    _device_change_table("Mobility_DeviceChange")
    op.create_table(
        "Device",
        _id(),
        sa.Column("ICCID", sa.String(32), nullable=False),
        sa.Column("MSISDN", sa.String(32)),
        sa.Column("IMEI", sa.String(32)),
        sa.Column("EID", sa.String(64)),
        sa.Column("ServiceProviderId", sa.Integer, sa.ForeignKey("ServiceProvider.Id"), nullable=False),
        sa.Column("TenantId", sa.Integer, nullable=False),
        sa.Column("DeviceStatusId", sa.Integer),
        sa.Column("Status", sa.String(64)),
        sa.Column("CarrierRatePlan", sa.String(128)),
        sa.Column("CommunicationPlan", sa.String(128)),
        sa.Column("CustomerRatePlanId", sa.Integer),
        sa.Column("CustomerPoolId", sa.Integer),
        sa.Column("Username", sa.String(256)),
        sa.Column("CostCenter1", sa.String(128)),
        sa.Column("CostCenter2", sa.String(128)),
        sa.Column("CostCenter3", sa.String(128)),
        sa.Column("IPAddress", sa.String(64)),
        sa.Column("DataUsageMB", sa.Numeric(18, 4)),
        sa.Column("CustomerDataAllocationMB", sa.Numeric(18, 4)),
        sa.Column("SiteId", sa.Integer),
        sa.Column("LastStatusChange", sa.DateTime),
        sa.Column("IsActive", sa.Boolean, nullable=False),
        sa.Column("IsDeleted", sa.Boolean, nullable=False),
        sa.Column("CreatedDate", sa.DateTime),
        sa.Column("ModifiedDate", sa.DateTime),
    )
    op.create_index("IX_Device_ICCID", "Device", ["ICCID"])
    op.create_index("IX_Device_SP_Tenant", "Device", ["ServiceProviderId", "TenantId"])
    # the Mobility inventory (legacy MobilityDevice, Telegence's TelegenceDevice): production has them,
    # so they are part of the stamped baseline and no revision ever creates or drops them there
    op.create_table(
        "MobilityDevice",
        _id(),
        sa.Column("ICCID", sa.String(32)),
        sa.Column("MSISDN", sa.String(32)),
        sa.Column("IMEI", sa.String(32)),
        sa.Column("ServiceProviderId", sa.Integer, sa.ForeignKey("ServiceProvider.Id"), nullable=False),
        sa.Column("TenantId", sa.Integer, nullable=False),
        sa.Column("DeviceStatusId", sa.Integer),
        sa.Column("Status", sa.String(64)),
        sa.Column("CarrierRatePlan", sa.String(128)),
        sa.Column("CustomerRatePlanId", sa.Integer),
        sa.Column("CustomerPoolId", sa.Integer),
        sa.Column("CustomerDataAllocationMB", sa.Numeric(18, 4)),
        sa.Column("Username", sa.String(256)),
        sa.Column("CostCenter1", sa.String(128)),
        sa.Column("CostCenter2", sa.String(128)),
        sa.Column("CostCenter3", sa.String(128)),
        sa.Column("IPAddress", sa.String(64)),
        sa.Column("DataUsageMB", sa.Numeric(18, 4)),
        sa.Column("SiteId", sa.Integer),
        sa.Column("LastStatusChange", sa.DateTime),
        sa.Column("IsActive", sa.Boolean, nullable=False),
        sa.Column("IsDeleted", sa.Boolean, nullable=False),
        sa.Column("CreatedDate", sa.DateTime),
        sa.Column("ModifiedDate", sa.DateTime),
    )
    op.create_table(
        "TelegenceDevice",
        _id(),
        sa.Column("SubscriberNumber", sa.String(32), nullable=False),
        sa.Column("FoundationAccountNumber", sa.String(64)),
        sa.Column("BillingAccountNumber", sa.String(64)),
        sa.Column("DeviceStatusId", sa.Integer),
        sa.Column("OldDeviceStatusId", sa.Integer),
        sa.Column("SubscriberNumberStatus", sa.String(32)),
        sa.Column("BanStatus", sa.String(32)),
        sa.Column("ContractStatus", sa.String(64)),
        sa.Column("RefreshTimestamp", sa.DateTime),
        sa.Column("FailedSyncCount", sa.Integer),
        sa.Column("LastActivatedDate", sa.DateTime),
        sa.Column("ServiceProviderId", sa.Integer),
        sa.Column("CreatedBy", sa.String(128)),
        sa.Column("CreatedDate", sa.DateTime),
        sa.Column("ModifiedBy", sa.String(128)),
        sa.Column("ModifiedDate", sa.DateTime),
        sa.Column("IsActive", sa.Boolean, nullable=False),
        sa.Column("IsDeleted", sa.Boolean, nullable=False),
    )
    op.create_table(
        "DeviceStatusHistory",
        _id(),
        sa.Column("DeviceId", sa.BigInteger),
        sa.Column("ICCID", sa.String(32)),
        sa.Column("PreviousStatus", sa.String(64)),
        sa.Column("CurrentStatus", sa.String(64)),
        sa.Column("ChangedBy", sa.String(128)),
        sa.Column("BulkChangeId", sa.BigInteger),
        sa.Column("Source", sa.String(64)),
        sa.Column("ChangedDate", sa.DateTime, nullable=False),
    )
    op.create_index("IX_DeviceStatusHistory_Device", "DeviceStatusHistory", ["DeviceId"])
    op.create_table(
        "DeviceBulkChangeLog",
        _id(),
        sa.Column("BulkChangeId", sa.BigInteger, nullable=False),
        sa.Column("M2MDeviceChangeId", sa.BigInteger),
        sa.Column("MobilityDeviceChangeId", sa.BigInteger),
        sa.Column("LogEntryDescription", sa.String(512)),
        sa.Column("ProcessBy", sa.String(128)),
        sa.Column("RequestText", sa.UnicodeText),
        sa.Column("ResponseText", sa.UnicodeText),
        sa.Column("ErrorText", sa.UnicodeText),
        sa.Column("HasErrors", sa.Boolean, nullable=False),
        sa.Column("ResponseStatus", sa.String(32)),
        sa.Column("CreatedDate", sa.DateTime, nullable=False),
    )
    op.create_index("IX_DeviceBulkChangeLog_BulkChange", "DeviceBulkChangeLog", ["BulkChangeId"])
    op.create_table(
        "JasperCarrierRatePlan",
        _id(),
        sa.Column("ServiceProviderId", sa.Integer, sa.ForeignKey("ServiceProvider.Id"), nullable=False),
        sa.Column("RatePlanCode", sa.String(128), nullable=False),
        sa.Column("CommunicationPlan", sa.String(128)),
        sa.Column("PlanMB", sa.Numeric(18, 4), nullable=False),
        sa.Column("BaseRate", sa.Numeric(18, 4), nullable=False),
        sa.Column("IsActive", sa.Boolean, nullable=False),
    )
    op.create_table(
        "Rev_Service",
        _id(),
        sa.Column("ServiceId", sa.BigInteger, nullable=False),
        sa.Column("CustomerId", sa.String(64), nullable=False),
        sa.Column("Number", sa.String(64)),
        sa.Column("Number2", sa.String(64)),
        sa.Column("ServiceTypeId", sa.Integer),
        sa.Column("ProviderId", sa.Integer),
        sa.Column("UsagePlanGroupId", sa.Integer),
        sa.Column("PackageId", sa.Integer),
        sa.Column("ActivatedDate", sa.DateTime),
        sa.Column("DisconnectedDate", sa.DateTime),
        sa.Column("DeviceId", sa.BigInteger),
        sa.Column("ServiceProviderId", sa.Integer),
        sa.Column("IntegrationAuthenticationId", sa.Integer),
        sa.Column("Username", sa.String(256)),
        sa.Column("CostCenter1", sa.String(128)),
        sa.Column("CostCenter2", sa.String(128)),
        sa.Column("CostCenter3", sa.String(128)),
        sa.Column("IsActive", sa.Boolean, nullable=False),
        sa.Column("CreatedDate", sa.DateTime, nullable=False),
    )
    op.create_index("IX_Rev_Service_Device", "Rev_Service", ["DeviceId"])
    op.create_index("IX_Rev_Service_ServiceId", "Rev_Service", ["ServiceId"])
    op.create_table(
        "Rev_ServiceProduct",
        _id(),
        sa.Column("ServiceProductId", sa.BigInteger, nullable=False),
        sa.Column("ServiceId", sa.BigInteger, nullable=False),
        sa.Column("CustomerId", sa.String(64)),
        sa.Column("ProductId", sa.BigInteger, nullable=False),
        sa.Column("PackageId", sa.Integer),
        sa.Column("Rate", sa.Numeric(25, 4)),
        sa.Column("Quantity", sa.Integer),
        sa.Column("Description", sa.String(256)),
        sa.Column("Status", sa.String(32)),
        sa.Column("DeviceId", sa.BigInteger),
        sa.Column("CreatedDate", sa.DateTime, nullable=False),
    )
    op.create_index("IX_Rev_ServiceProduct_Service", "Rev_ServiceProduct", ["ServiceId"])
    op.create_table(
        "Device_CustomerRatePlanOrRatePool_Queue",
        _id(),
        sa.Column("DeviceId", sa.BigInteger, nullable=False),
        sa.Column("CustomerRatePlanId", sa.Integer),
        sa.Column("CustomerRatePoolId", sa.Integer),
        sa.Column("CustomerDataAllocationMB", sa.Numeric(18, 4)),
        sa.Column("EffectiveDate", sa.DateTime, nullable=False),
        sa.Column("PortalType", sa.Integer, nullable=False),
        sa.Column("TenantId", sa.Integer, nullable=False),
        sa.Column("CreatedBy", sa.String(128)),
        sa.Column("CreatedDate", sa.DateTime, nullable=False),
        sa.Column("IsActive", sa.Boolean, nullable=False),
    )
    op.create_index("IX_Device_CustomerRatePlanOrRatePool_Queue_Due", "Device_CustomerRatePlanOrRatePool_Queue",
                    ["IsActive", "EffectiveDate"])


def downgrade() -> None:
    # children first (foreign keys)
    for name in ("Device_CustomerRatePlanOrRatePool_Queue", "Rev_ServiceProduct", "Rev_Service",
                 "JasperCarrierRatePlan", "DeviceBulkChangeLog", "DeviceStatusHistory", "TelegenceDevice",
                 "MobilityDevice", "Device",
                 "Mobility_DeviceChange", "M2M_DeviceChange", "DeviceBulkChange", "DeviceStatus",
                 "ServiceProvider", "Integration", "DeviceChangeRequestType"):
        op.drop_table(name)
