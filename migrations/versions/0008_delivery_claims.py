"""delivery claims: which bot process is posting a job's result, and until when

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03 09:30:00.000000

Several bot processes (shards, or a rolling deploy's old and new bot) share one database and one outbox. Before
posting a result a bot claims the row for a lease (``delivery_claimed_by``, ``delivery_claimed_until``); only one
claim wins, so no two bots post the same result, and a bot that dies mid-delivery leaves a lease that expires, after
which another bot takes the job over.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("generations") as batch:
        batch.add_column(
            sa.Column("delivery_claimed_by", sa.String(100), nullable=True, comment="the bot process posting it")
        )
        batch.add_column(sa.Column("delivery_claimed_until", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("generations") as batch:
        batch.drop_column("delivery_claimed_until")
        batch.drop_column("delivery_claimed_by")
