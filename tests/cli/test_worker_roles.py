"""``beatforge worker --roles``: which queue the worker serves, over ``BEATFORGE_WORKER_ROLES``."""

from __future__ import annotations

import pytest

from beatforge.config import Settings
from beatforge.queue import served_queue
from cli.main import build_parser
from cli.serve import with_roles


def test_roles_train_serves_only_the_training_queue(settings: Settings) -> None:
    args = build_parser(settings).parse_args(["worker", "--roles", "train"])
    assert served_queue(with_roles(args, settings)) == settings.train_queue_name


def test_without_the_flag_the_setting_decides(settings: Settings) -> None:
    args = build_parser(settings).parse_args(["worker"])
    assert with_roles(args, settings) is settings and served_queue(settings) == settings.queue_name
    trainer = settings.model_copy(update={"worker_roles": "train"})
    assert served_queue(with_roles(args, trainer)) == settings.train_queue_name


def test_an_unknown_role_is_refused(settings: Settings) -> None:
    with pytest.raises(SystemExit):
        build_parser(settings).parse_args(["worker", "--roles", "bake"])
