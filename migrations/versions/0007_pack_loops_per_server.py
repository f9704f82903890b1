"""the most loops a server's packs may hold (/admin limits pack_loops)

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03 03:20:00.000000

None, like every server setting, means the bot's own (``BEATFORGE_PACK_MAX_LOOPS``).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("guild_settings") as batch:
        batch.add_column(sa.Column("max_pack_loops", sa.Integer(), nullable=True, comment="loops in one /pack"))


def downgrade() -> None:
    with op.batch_alter_table("guild_settings") as batch:
        batch.drop_column("max_pack_loops")
