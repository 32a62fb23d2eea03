"""notifier: respondents, invitations (one row per invitation id), errors, failure streaks

Revision ID: 0101_notifier
Revises:
Create Date: 2026-11-29

Owned by the notifier area (models in notifier/models.py).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0101_notifier"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "respondents",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("survey_id", sa.String(64), nullable=False),
        sa.Column("email", sa.String(320), nullable=False),
        sa.Column("variables", sa.JSON(), nullable=False),
        sa.Column("values_at", sa.DateTime(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.UniqueConstraint("survey_id", "email", name="uq_respondents_survey_email"),
    )
    op.create_table(
        "invitations",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("automation_id", sa.String(64), nullable=False),
        sa.Column("automation_version", sa.Integer(), nullable=False),
        sa.Column("survey_id", sa.String(64), nullable=False),
        sa.Column("survey_name", sa.String(200), nullable=False),
        sa.Column("event_id", sa.String(64), nullable=False),
        sa.Column("record_index", sa.Integer(), nullable=False),
        sa.Column("respondent_id", sa.Integer(),
                  sa.ForeignKey("respondents.id", ondelete="SET NULL"), nullable=True),
        sa.Column("token", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("smtp_code", sa.Integer(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("message_id", sa.String(200), nullable=True),
        sa.Column("outcome_published", sa.Boolean(), nullable=False),
        sa.Column("received_at", sa.DateTime(), nullable=False),
        sa.Column("due_at", sa.DateTime(), nullable=False),
        sa.Column("claimed_by", sa.String(64), nullable=False),
        sa.Column("claimed_at", sa.DateTime(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("finished_at", sa.DateTime(), nullable=True),
        sa.UniqueConstraint("token", name="uq_invitations_token"),
    )
    op.create_index("ix_invitations_respondent_id", "invitations", ["respondent_id"])
    op.create_index("ix_invitations_automation_status", "invitations",
                    ["automation_id", "status"])
    op.create_table(
        "automation_failure_streaks",
        sa.Column("automation_id", sa.String(64), primary_key=True),
        sa.Column("consecutive", sa.Integer(), nullable=False),
        sa.Column("last_failure_at", sa.DateTime(), nullable=True),
        sa.Column("last_kind", sa.String(64), nullable=True),
        sa.Column("reset_at", sa.DateTime(), nullable=True),
        sa.Column("disabled_at", sa.DateTime(), nullable=True),
        sa.Column("last_alert_at", sa.DateTime(), nullable=True),
    )
    op.create_table(
        "automation_errors",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("automation_id", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("source", sa.String(32), nullable=False),
        sa.Column("field", sa.String(500), nullable=True),
        sa.Column("event_id", sa.String(64), nullable=True),
        sa.Column("record_index", sa.Integer(), nullable=True),
        sa.Column("invitation_id", sa.String(64), nullable=True),
        sa.Column("at", sa.DateTime(), nullable=False),
    )
    op.create_index("ix_automation_errors_automation_id", "automation_errors", ["automation_id"])
    op.create_index("ix_automation_errors_automation_at", "automation_errors",
                    ["automation_id", "at"])


def downgrade() -> None:
    op.drop_table("automation_errors")
    op.drop_table("automation_failure_streaks")
    op.drop_index("ix_invitations_automation_status", "invitations")
    op.drop_index("ix_invitations_respondent_id", "invitations")
    op.drop_table("invitations")
    op.drop_table("respondents")
