"""control plane: per-automation ingress limits (rate_limit, rate_burst, max_body_bytes)

Revision ID: 0004_limits
Revises: 0003_rules
Create Date: 2026-11-30

Issue 13, item 3. Existing automations get none: null means the ingress's global setting.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004_limits"
down_revision: str | Sequence[str] | None = "0003_rules"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("automations") as batch:
        batch.add_column(sa.Column("rate_limit", sa.Float(), nullable=True))
        batch.add_column(sa.Column("rate_burst", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("max_body_bytes", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("automations") as batch:
        batch.drop_column("max_body_bytes")
        batch.drop_column("rate_burst")
        batch.drop_column("rate_limit")
