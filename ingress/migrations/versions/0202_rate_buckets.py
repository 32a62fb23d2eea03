"""ingress: the rate buckets several ingress replicas share (PostgreSQL)

Revision ID: 0202_rate_buckets
Revises: 0201_idempotency
Create Date: 2026-12-01

Issue 13, item 2. The table was created by ingress/ratelimit.py itself (CREATE TABLE IF NOT
EXISTS under an advisory lock); it now has its place in the ingress's history. A database
where that code already created it keeps it as it is (same columns).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0202_rate_buckets"
down_revision: str | Sequence[str] | None = "0201_idempotency"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    if sa.inspect(op.get_bind()).has_table("ingress_rate_buckets"):
        # Created by the hand-written CREATE TABLE of the first release: the same columns;
        # only its primary key's name differs, which nothing refers to.
        op.execute("ALTER TABLE ingress_rate_buckets RENAME CONSTRAINT "
                   "ingress_rate_buckets_pkey TO pk_ingress_rate_buckets")
        return
    op.create_table(
        "ingress_rate_buckets",
        sa.Column("automation_id", sa.Text(), nullable=False),
        sa.Column("tokens", sa.Float(precision=53), nullable=False),
        sa.Column("refilled_at", sa.Float(precision=53), nullable=False),
        sa.Column("granted", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("automation_id", name="pk_ingress_rate_buckets"),
    )


def downgrade() -> None:
    op.drop_table("ingress_rate_buckets")
