"""signed webhooks: automations.auth_mode and signature_scheme, the signing_secrets table

Revision ID: 0002_signing
Revises: 0001_control_plane
Create Date: 2026-12-01

Issue 16, item 1. Existing automations keep authenticating with their API key (mode `key`).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002_signing"
down_revision: str | Sequence[str] | None = "0001_control_plane"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("automations") as batch:  # SQLite: batch (copy and move)
        batch.add_column(sa.Column("auth_mode", sa.String(16), nullable=False,
                                   server_default="key"))
        batch.add_column(sa.Column("signature_scheme", sa.String(16), nullable=False,
                                   server_default="standard"))
    op.create_table(
        "signing_secrets",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("automation_id", sa.String(36),
                  sa.ForeignKey("automations.id", ondelete="CASCADE"), nullable=False),
        sa.Column("sealed", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=True),
    )
    op.create_index("ix_signing_secrets_automation_id", "signing_secrets", ["automation_id"])


def downgrade() -> None:
    op.drop_index("ix_signing_secrets_automation_id", "signing_secrets")
    op.drop_table("signing_secrets")
    with op.batch_alter_table("automations") as batch:
        batch.drop_column("signature_scheme")
        batch.drop_column("auth_mode")
