"""What every contract model shares: frozen, strict about unknown fields, and versioned on the wire."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

#: Bumped whenever a payload's shape changes: a bot and a worker of different versions then fail loudly on
#: validation instead of misreading each other's fields (2: one parameter model per job kind).
SCHEMA_VERSION: Literal[2] = 2


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
