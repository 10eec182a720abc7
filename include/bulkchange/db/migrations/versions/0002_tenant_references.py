"""Tenant-owned references a change request may name: Site, CustomerRatePlan, CustomerRatePool, RevCustomer.

Legacy AMOP lookups reduced to the columns the pipeline reads (which tenant owns an id). A
production AMOP database that already has these four tables with at least these columns is
stamped at this revision instead of the baseline (docs/database.md).

Revision ID: 0002_tenant_references
Revises: 0001_legacy_baseline
Create Date: 2026-11-30
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002_tenant_references"
down_revision = "0001_legacy_baseline"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "Site",
        sa.Column("Id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("TenantId", sa.Integer, nullable=False),
        sa.Column("Name", sa.String(256)),
        sa.Column("RevCustomerId", sa.String(64)),
        sa.Column("IsActive", sa.Boolean, nullable=False, server_default=sa.true()),
    )
    op.create_index("IX_Site_Tenant", "Site", ["TenantId"])
    op.create_table(
        "CustomerRatePlan",
        sa.Column("Id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("TenantId", sa.Integer, nullable=False),
        sa.Column("RatePlanName", sa.String(256)),
        sa.Column("IsActive", sa.Boolean, nullable=False, server_default=sa.true()),
    )
    op.create_index("IX_CustomerRatePlan_Tenant", "CustomerRatePlan", ["TenantId"])
    op.create_table(
        "CustomerRatePool",
        sa.Column("Id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("TenantId", sa.Integer, nullable=False),
        sa.Column("Name", sa.String(256)),
        sa.Column("IsActive", sa.Boolean, nullable=False, server_default=sa.true()),
    )
    op.create_index("IX_CustomerRatePool_Tenant", "CustomerRatePool", ["TenantId"])
    op.create_table(
        "RevCustomer",
        sa.Column("Id", Id, primary_key=True, autoincrement=True),
        sa.Column("RevCustomerId", sa.String(64), nullable=False),
        sa.Column("TenantId", sa.Integer, nullable=False),
        sa.Column("CustomerName", sa.String(256)),
        sa.Column("IsActive", sa.Boolean, nullable=False, server_default=sa.true()),
    )
    op.create_index("IX_RevCustomer_RevCustomerId", "RevCustomer", ["RevCustomerId"])


def downgrade() -> None:
    for name in ("RevCustomer", "CustomerRatePool", "CustomerRatePlan", "Site"):
        op.drop_table(name)
