"""the engine each registered model runs on (musicgen or acestep)

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03 14:00:00.000000

Every model registered before this revision is a MusicGen model.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("registered_models") as batch:
        batch.add_column(
            sa.Column(
                "engine",
                sa.String(length=16),
                nullable=False,
                server_default="musicgen",
                comment="musicgen or acestep",
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("registered_models") as batch:
        batch.drop_column("engine")
