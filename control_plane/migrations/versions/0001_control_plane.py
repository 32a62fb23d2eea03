"""control plane: surveys, variables, messages, automations, api keys, automation errors

Revision ID: 0001_control_plane
Revises: (none)
Create Date: 2026-11-29

Other areas add their tables with revisions whose `down_revision` is this one.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001_control_plane"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "surveys",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
    )
    op.create_table(
        "messages",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("subject", sa.String(500), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
    )
    op.create_table(
        "variables",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("survey_id", sa.String(36),
                  sa.ForeignKey("surveys.id", ondelete="CASCADE"), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("type", sa.String(16), nullable=False),
        sa.Column("options", sa.JSON(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.UniqueConstraint("survey_id", "name", name="uq_variables_survey_name"),
    )
    op.create_index("ix_variables_survey_id", "variables", ["survey_id"])
    op.create_table(
        "automations",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("survey_id", sa.String(36),
                  sa.ForeignKey("surveys.id", ondelete="RESTRICT"), nullable=False),
        sa.Column("message_id", sa.String(36),
                  sa.ForeignKey("messages.id", ondelete="RESTRICT"), nullable=False),
        sa.Column("email_field", sa.String(500), nullable=False),
        sa.Column("fields_mode", sa.String(8), nullable=False),
        sa.Column("fields_paths", sa.JSON(), nullable=False),
        sa.Column("filters", sa.JSON(), nullable=True),
        sa.Column("delay_days", sa.Integer(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("disabled_reason", sa.String(1000), nullable=True),
        sa.Column("error_notifications_enabled", sa.Boolean(), nullable=False),
        sa.Column("error_recipients", sa.JSON(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
    )
    op.create_index("ix_automations_survey_id", "automations", ["survey_id"])
    op.create_index("ix_automations_message_id", "automations", ["message_id"])
    op.create_table(
        "mappings",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("automation_id", sa.String(36),
                  sa.ForeignKey("automations.id", ondelete="CASCADE"), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("field", sa.String(500), nullable=False),
        sa.Column("variable", sa.String(64), nullable=True),
        sa.UniqueConstraint("automation_id", "field", name="uq_mappings_field"),
    )
    op.create_index("ix_mappings_automation_id", "mappings", ["automation_id"])
    op.create_index("ix_mappings_variable", "mappings", ["variable"])
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("automation_id", sa.String(36),
                  sa.ForeignKey("automations.id", ondelete="CASCADE"), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False, unique=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=True),
    )
    op.create_index("ix_api_keys_automation_id", "api_keys", ["automation_id"])



def downgrade() -> None:
    for table in ("api_keys", "mappings", "automations", "variables",
                  "messages", "surveys"):
        op.drop_table(table)
