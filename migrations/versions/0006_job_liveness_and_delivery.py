"""job liveness (tries, heartbeat), delivery as an outbox (attempts, next try), files removed by gc

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 23:00:00.000000

A worker that dies mid-job leaves its row ``running``; the reconciler finds it by its stopped heartbeat and
re-queues it until ``attempts`` reaches the configured tries. Delivery keeps its attempts and the time of
its next try on the row, so a bot restart neither forgets a failing delivery nor retries it in a tight loop.
``beatforge gc`` marks the jobs whose files it removed, so ``doctor`` tells them from results that were lost.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("generations") as batch:
        batch.add_column(
            sa.Column("attempts", sa.Integer(), server_default="0", nullable=False, comment="times a worker took it")
        )
        batch.add_column(sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("delivery_attempts", sa.Integer(), server_default="0", nullable=False))
        batch.add_column(sa.Column("deliver_after", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("files_removed_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("generations") as batch:
        batch.drop_column("files_removed_at")
        batch.drop_column("deliver_after")
        batch.drop_column("delivery_attempts")
        batch.drop_column("heartbeat_at")
        batch.drop_column("attempts")
