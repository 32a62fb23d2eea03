"""The ingress's own PostgreSQL tables, shared by its replicas (issue 13): the Idempotency-Key
store (`ingress/idempotency_pg.py`) and the rate buckets (`ingress/ratelimit.py`).

One MetaData for one Alembic history (`ingress/migrations`, version table
`alembic_version_ingress`): each store runs `ingress.migrations.migrate(url)` before its first
statement, under core.sql's advisory lock, so replicas starting together create each table
once. The SQLite default (one replica) needs neither.
"""

from __future__ import annotations

from sqlalchemy import (
    Column,
    DateTime,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
)

METADATA = MetaData()

IDEMPOTENCY = Table(
    "ingress_idempotency", METADATA,
    Column("automation", String(64), nullable=False),
    Column("key", Text(), nullable=False),
    Column("state", String(8), nullable=False),  # pending | done | failed
    Column("event_id", String(64), nullable=False),
    Column("status", Integer(), nullable=True),
    Column("body", LargeBinary(), nullable=True),
    Column("owner", String(32), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    PrimaryKeyConstraint("automation", "key", name="pk_ingress_idempotency"),
    Index("ix_ingress_idempotency_created", "created_at"),
)

# One token bucket per automation; `refilled_at` is the server's clock (epoch seconds), and
# `granted` what the last lease statement granted (RETURNING reads it).
RATE_BUCKETS = Table(
    "ingress_rate_buckets", METADATA,
    Column("automation_id", Text(), nullable=False),
    Column("tokens", Float(precision=53), nullable=False),
    Column("refilled_at", Float(precision=53), nullable=False),
    Column("granted", Integer(), nullable=False),
    PrimaryKeyConstraint("automation_id", name="pk_ingress_rate_buckets"),
)
