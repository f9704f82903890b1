"""The database schema. ORM objects never leave ``storage/``: callers get contract models or dataclasses."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Text,
)
from sqlalchemy.ext.asyncio import AsyncAttrs
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

# Named constraints, so Alembic's batch mode (SQLite's ALTER substitute) can drop and recreate them.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC in and out. SQLite stores no zone and would hand back naive datetimes."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:  # noqa: ARG002
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:  # noqa: ARG002
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(AsyncAttrs, DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False, comment="Discord user id")
    name: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    generations: Mapped[list[Generation]] = relationship(back_populates="user")


class Generation(Base):
    __tablename__ = "generations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    #: A ``JobKind``: beat (audio + cover), or made from ``parent_id``: cover, loop, midi (or MIDI of an upload).
    kind: Mapped[str] = mapped_column(String(16), default="beat", server_default="beat")
    #: What this job was made from (a re-roll's or a new cover's original).
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("generations.id", ondelete="SET NULL"), index=True)
    #: How it was made from its parent (a ``Relation``: reroll, extend, edit, loop, midi, cover), for /history.
    relation: Mapped[str | None] = mapped_column(String(16))
    #: ⭐ Keep: the user marked it as one of their keepers.
    kept: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    guild_id: Mapped[int | None] = mapped_column(BigInteger, index=True)
    channel_id: Mapped[int | None] = mapped_column(BigInteger)
    #: The bot's "queued…" message; the result replies to it and progress edits it.
    status_message_id: Mapped[int | None] = mapped_column(BigInteger)
    #: The message that carries the result (for /history's links and 🔁 reactions on it).
    result_message_id: Mapped[int | None] = mapped_column(BigInteger, index=True)
    #: arq's job id: unique across database resets, unlike ``id``, so a fresh database never
    #: collides with results a long-lived redis still keeps (arq would silently drop the job).
    queue_job_id: Mapped[str | None] = mapped_column(String(64), unique=True)

    #: The job's parameters, as the JSON of its kind's model (``beatforge.contract.PARAMS_BY_KIND``).
    params: Mapped[dict[str, Any]] = mapped_column(JSON)
    #: Which model made the result: the one field that says so (``JobView.model_name`` reads it).
    resolved_model: Mapped[str | None] = mapped_column(String(300), comment="what the worker actually ran")

    status: Mapped[str] = mapped_column(String(16), index=True)
    error_code: Mapped[str | None] = mapped_column(String(32))
    error: Mapped[str | None] = mapped_column(Text)
    queued_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    #: Times a worker took the job; the reconciler fails it once this reaches the configured tries.
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0", comment="times a worker took it")
    #: A running job's last sign of life (refreshed every few seconds): stale means its worker died.
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    #: Failed delivery attempts so far, and when the next may start (the outbox's backoff).
    delivery_attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    deliver_after: Mapped[datetime | None] = mapped_column(UTCDateTime())
    #: The bot process posting the result now, and until when its claim holds: several bots share one outbox, and
    #: only the claim's holder posts (``storage.claims.claim_delivery``); a dead holder's claim simply expires.
    delivery_claimed_by: Mapped[str | None] = mapped_column(String(100), comment="the bot process posting it")
    delivery_claimed_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    #: ``beatforge gc`` removed its files (past their age, or over the disk quota); the row stays for history.
    files_removed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    user: Mapped[User] = relationship(back_populates="generations")
    artifacts: Mapped[list[Artifact]] = relationship(
        back_populates="generation", order_by="Artifact.id", cascade="all, delete-orphan"
    )


class Artifact(Base):
    __tablename__ = "artifacts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    generation_id: Mapped[int] = mapped_column(ForeignKey("generations.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(16), comment="audio, cover, loop, midi, ...")  # an ArtifactKind
    path: Mapped[str] = mapped_column(String(500), comment="relative to the artifact directory")
    bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    #: What a user should know about the file, e.g. a cover's source and why: the JSON of its kind's model
    #: (``beatforge.contract.artifacts``).
    meta: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    generation: Mapped[Generation] = relationship(back_populates="artifacts")


class RegisteredModel(Base):
    """A music model admins added to the registry (``generation/registry.py`` merges these with its built-ins)."""

    __tablename__ = "registered_models"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True, comment="registry name users pick")
    source: Mapped[str] = mapped_column(String(500), comment="HF id or directory; for lora, the adapter")
    kind: Mapped[str] = mapped_column(String(16), comment="base, finetune or lora")
    base: Mapped[str | None] = mapped_column(String(64), comment="lora only: the base model's registry name")
    licence: Mapped[str] = mapped_column(String(200), default="", server_default="")
    description: Mapped[str] = mapped_column(Text, default="", server_default="")
    melody: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")
    stereo: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")
    engine: Mapped[str] = mapped_column(
        String(16), default="musicgen", server_default="musicgen", comment="musicgen or acestep"
    )
    added_by: Mapped[int | None] = mapped_column(BigInteger, comment="Discord user id of the admin who added it")
    added_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    guild_id: Mapped[int | None] = mapped_column(
        BigInteger, comment="the server it was trained for (/admin train); null: every server"
    )


class GuildConfig(Base):
    """What a server's admins chose (``/admin``); a column left None means the bot's global setting."""

    __tablename__ = "guild_settings"

    guild_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    model: Mapped[str | None] = mapped_column(String(300), comment="registry name new jobs use")
    jobs_per_hour: Mapped[int | None] = mapped_column(Integer, comment="per user")
    concurrent_jobs: Mapped[int | None] = mapped_column(Integer, comment="per user, queued or running")
    max_duration_s: Mapped[float | None] = mapped_column(Float)
    everyone_can_reroll: Mapped[bool | None] = mapped_column(Boolean, comment="🔁 on anyone's result")
    max_pack_loops: Mapped[int | None] = mapped_column(Integer, comment="loops in one /pack")
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)


class AuditEntry(Base):
    """One admin action: who did what, where, and when. Written in the same transaction as the action."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    guild_id: Mapped[int | None] = mapped_column(BigInteger, index=True)
    user_id: Mapped[int] = mapped_column(BigInteger, comment="Discord user id of the admin")
    action: Mapped[str] = mapped_column(String(32), comment="e.g. model.use, limits, cancel")
    detail: Mapped[dict[str, Any]] = mapped_column(JSON)
    at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
