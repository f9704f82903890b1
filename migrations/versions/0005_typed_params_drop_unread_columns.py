"""one parameter model per job kind; drop the job columns nothing reads

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-24 10:00:00.000000

Until now every job stored the whole beat parameters, with placeholders where its kind had no use for a
field (a cover's duration, an upload's seed) and ``loop``/``midi``/``take`` set by kind. Each kind now has
its own model (``beatforge.contract.params``), so each row's ``params`` is rewritten to its kind's fields.
The copies of ``prompt``, ``model``, ``seed`` and ``duration_s`` in their own columns were written and
never read: dropped. A take's ``model`` in its artifact's metadata repeated the job's ``resolved_model``:
dropped too (copied to ``resolved_model`` first where that was empty).

The rewrite is plain dictionaries, frozen here, never the contract's models: a migration must mean the
same thing whatever the contract becomes later.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

Params = dict[str, Any]

_DESCRIBED = ("prompt", "style", "mood", "title")
_BEAT = (*_DESCRIBED, "duration_s", "seed", "model", "bpm", "takes", "sampling", "continue_from", "melody", "loop")
#: What a MIDI job of an upload said where the beat's fields were (the bot's placeholders of revision 0004).
_UPLOAD_DURATION_S = 120.0
_UNKNOWN_DURATION_S = 30.0

_generations = sa.table(
    "generations",
    sa.column("id", sa.Integer()),
    sa.column("kind", sa.String()),
    sa.column("parent_id", sa.Integer()),
    sa.column("params", sa.JSON()),
    sa.column("resolved_model", sa.String()),
)
_artifacts = sa.table(
    "artifacts",
    sa.column("id", sa.Integer()),
    sa.column("generation_id", sa.Integer()),
    sa.column("kind", sa.String()),
    sa.column("meta", sa.JSON()),
)


def _pick(old: Params, keys: Sequence[str]) -> Params:
    return {key: old[key] for key in keys if key in old}


def _to_kind(kind: str, old: Params) -> Params:
    """A 0004 row's parameters (the whole beat's, whatever the kind) as its kind's own fields."""
    if kind == "cover":
        return _pick(old, (*_DESCRIBED, "seed"))
    if kind == "loop":
        loop = old.get("loop") or ({"target_bpm": old["bpm"]} if old.get("bpm") else {})
        return {**_pick(old, (*_DESCRIBED, "seed", "take")), "loop": loop}
    if kind == "midi":
        midi = old.get("midi") or {}
        upload = midi.get("upload")
        return {
            **_pick(old, (*_DESCRIBED, "take")),
            "seed": None if upload else old.get("seed"),
            "stems": bool(midi.get("stems", False)),
            "upload": upload,
        }
    return _pick(old, _BEAT)


def _to_beat(kind: str, new: Params, parent: Params | None) -> Params:
    """The other way: a kind's fields as 0004's beat parameters, the beat's fields taken from the parent beat."""
    if kind == "beat":
        return dict(new)
    seed = new.get("seed") if new.get("seed") is not None else 0
    duration_s = (parent or {}).get("duration_s", _UNKNOWN_DURATION_S)
    if kind == "cover":
        return {**_pick(new, _DESCRIBED), "seed": seed, "duration_s": duration_s}
    old = {**_pick(parent or {}, _BEAT), **_pick(new, _DESCRIBED), "seed": seed, "duration_s": duration_s}
    old["take"] = new.get("take", 1)
    if kind == "loop":
        old["loop"] = new.get("loop") or {}
    else:  # midi
        upload = new.get("upload")
        old.update(loop=None, midi={"stems": new.get("stems", False), "upload": upload})
        if upload:
            old["duration_s"] = _UPLOAD_DURATION_S
    return old


def _rewrite_params(convert: Callable[[int, str, Params, dict[int, Params]], Params]) -> None:
    bind = op.get_bind()
    rows = bind.execute(sa.select(_generations.c.id, _generations.c.kind, _generations.c.params)).all()
    every = {row.id: dict(row.params or {}) for row in rows}
    for row in rows:
        params = convert(row.id, row.kind, every[row.id], every)
        bind.execute(sa.update(_generations).where(_generations.c.id == row.id).values(params=params))


def _move_take_models() -> None:
    """A take's ``model`` repeated what the worker ran: keep it once, on the job."""
    bind = op.get_bind()
    rows = bind.execute(
        sa.select(_artifacts.c.id, _artifacts.c.generation_id, _artifacts.c.meta).where(_artifacts.c.kind == "audio")
    ).all()
    for row in rows:
        meta = dict(row.meta or {})
        if "model" not in meta:
            continue
        model = meta.pop("model")
        if model:
            bind.execute(
                sa.update(_generations)
                .where(_generations.c.id == row.generation_id, _generations.c.resolved_model.is_(None))
                .values(resolved_model=model)
            )
        bind.execute(sa.update(_artifacts).where(_artifacts.c.id == row.id).values(meta=meta))


def upgrade() -> None:
    _rewrite_params(lambda _id, kind, old, _every: _to_kind(kind, old))
    _move_take_models()
    with op.batch_alter_table("generations", schema=None) as batch_op:
        batch_op.drop_column("duration_s")
        batch_op.drop_column("seed")
        batch_op.drop_column("model")
        batch_op.drop_column("prompt")


def downgrade() -> None:
    with op.batch_alter_table("generations", schema=None) as batch_op:
        batch_op.add_column(sa.Column("prompt", sa.Text(), nullable=True))
        batch_op.add_column(
            sa.Column("model", sa.String(length=300), nullable=True, comment="requested; None = worker default")
        )
        batch_op.add_column(sa.Column("seed", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("duration_s", sa.Float(), nullable=True))

    bind = op.get_bind()
    parents = {
        row.id: row.parent_id for row in bind.execute(sa.select(_generations.c.id, _generations.c.parent_id)).all()
    }

    def back(job_id: int, kind: str, new: Params, every: dict[int, Params]) -> Params:
        parent_id = parents.get(job_id)
        return _to_beat(kind, new, every.get(parent_id) if parent_id is not None else None)

    _rewrite_params(back)
    columns = sa.table(
        "generations",
        sa.column("id", sa.Integer()),
        sa.column("prompt", sa.Text()),
        sa.column("model", sa.String()),
        sa.column("seed", sa.BigInteger()),
        sa.column("duration_s", sa.Float()),
    )
    for row in bind.execute(sa.select(_generations.c.id, _generations.c.params)).all():
        params = row.params or {}
        bind.execute(
            sa.update(columns)
            .where(columns.c.id == row.id)
            .values(
                prompt=params.get("prompt", ""),
                model=params.get("model"),
                seed=params.get("seed", 0),
                duration_s=params.get("duration_s", _UNKNOWN_DURATION_S),
            )
        )
    with op.batch_alter_table("generations", schema=None) as batch_op:
        batch_op.alter_column("prompt", existing_type=sa.Text(), nullable=False)
        batch_op.alter_column("seed", existing_type=sa.BigInteger(), nullable=False)
        batch_op.alter_column("duration_s", existing_type=sa.Float(), nullable=False)
