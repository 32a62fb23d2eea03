"""control plane: invitation rules on automations (throttle_days, send_window)

Revision ID: 0003_rules
Revises: 0002_signing
Create Date: 2026-11-30

Issue 16's throttling and send windows. Existing automations get no limit and no window.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003_rules"
down_revision: str | Sequence[str] | None = "0002_signing"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("automations") as batch:
        batch.add_column(sa.Column("throttle_days", sa.Integer(), nullable=False,
                                   server_default="0"))
        batch.add_column(sa.Column("send_window", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("automations") as batch:
        batch.drop_column("send_window")
        batch.drop_column("throttle_days")
