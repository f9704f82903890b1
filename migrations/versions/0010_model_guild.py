"""the server a registered model belongs to (a model trained with /admin train), or none for every server

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03 17:30:00.000000

Every model registered before this revision is for every server.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("registered_models") as batch:
        batch.add_column(
            sa.Column(
                "guild_id",
                sa.BigInteger(),
                nullable=True,
                comment="the server it was trained for (/admin train); null: every server",
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("registered_models") as batch:
        batch.drop_column("guild_id")
