"""docker-compose.yml: `docker compose up` needs nothing but redis, the bot and a worker, and the scale profile adds
PostgreSQL, MinIO and a CPU worker without changing that (docker is not available to the tests, so the file is
checked as the data compose reads)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from beatforge.config import Settings

COMPOSE = Path(__file__).resolve().parent.parent / "docker-compose.yml"
SCALE = {"postgres", "minio", "minio-bucket", "worker-cpu"}


def _services() -> dict[str, Any]:
    services: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())["services"]
    return services


def test_the_default_services_run_without_the_scale_profile() -> None:
    services = _services()
    default = {name for name, s in services.items() if "profiles" not in s}
    assert default == {"redis", "migrate", "bot", "worker"}
    assert {name for name, s in services.items() if s.get("profiles") == ["scale"]} == SCALE
    assert {name for name, s in services.items() if s.get("profiles") == ["train"]} == {"worker-train"}
    for name in default:
        for dependency, condition in (services[name].get("depends_on") or {}).items():
            # A default service may wait for a profile's service only where compose may skip it.
            assert dependency in default or condition.get("required") is False, (name, dependency)


def test_the_database_is_sqlite_on_the_volume_unless_env_names_another() -> None:
    for name in ("migrate", "bot", "worker", "worker-cpu"):
        url = _services()[name]["environment"]["BEATFORGE_DATABASE_URL"]
        assert url == "${BEATFORGE_DATABASE_URL:-sqlite+aiosqlite:////data/beatforge.db}", name


def test_the_cpu_worker_is_a_valid_cpu_lane_once_env_names_the_cpu_queue() -> None:
    environment = _services()["worker-cpu"]["environment"]
    assert (environment["BEATFORGE_WORKER_LANE"], environment["BEATFORGE_DEVICE"]) == ("cpu", "cpu")
    settings = Settings(_env_file=None, worker_lane="cpu", cpu_queue_name="beatforge:cpu")  # type: ignore[call-arg]
    assert settings.worker_lane == "cpu"


def test_the_training_worker_takes_only_training_runs() -> None:
    service = _services()["worker-train"]
    assert service["command"] == ["beatforge", "worker", "--roles", "train"]
    assert (
        service["environment"]["BEATFORGE_DATABASE_URL"]
        == _services()["worker"]["environment"]["BEATFORGE_DATABASE_URL"]
    )
    assert service["volumes"] == _services()["worker"]["volumes"]  # the models it writes, where generation reads
