"""The model registry (built-ins, JSON file, database rows), LoRA adapters, and the memory-bounded model cache."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
import torch
from peft import LoraConfig, get_peft_model
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from transformers import MusicgenForConditionalGeneration

from beatforge.config import Settings
from beatforge.engines import licence_terms
from generation.errors import ModelUnavailable
from generation.music import model_cache as models_module
from generation.music.model_cache import GIB, ModelCache, engine_bytes, module_bytes
from generation.music.musicgen import MusicGenEngine
from generation.music.registry import (
    META_LICENCE,
    ModelRegistry,
    ModelSpec,
    RegistryError,
    load_registry,
)
from generation.music.tiny import DEBUG_MODEL, save_tiny_musicgen
from storage import model_registry
from storage.model_registry import ModelAlreadyRegistered

Q_PROJ = "model.decoder.layers.0.self_attn.q_proj.weight"


def _decoder_weight(engine: MusicGenEngine, name: str = Q_PROJ) -> torch.Tensor:
    return engine.model.decoder.state_dict()[name].detach().clone()


@pytest.fixture(scope="module")
def other_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A second tiny model with other weights (seed 1)."""
    return save_tiny_musicgen(tmp_path_factory.mktemp("tiny-musicgen-1"), seed=1)


def _save_adapter(model_dir: Path, out: Path, *, whole_model: bool = False) -> Path:
    """A LoRA on the decoder's attention projections with non-zero random weights (a trained adapter's stand-in)."""
    model = MusicgenForConditionalGeneration.from_pretrained(model_dir)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(7)
        peft_model = get_peft_model(model if whole_model else model.decoder, config)
    peft_model.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def adapter_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _save_adapter(tiny_model_dir, tmp_path_factory.mktemp("lora"))


def _registry(tmp_path: Path, tiny_model_dir: Path) -> ModelRegistry:
    registry = ModelRegistry(tmp_path / "models.json")
    registry.register(ModelSpec(name="tiny", source=str(tiny_model_dir), kind="finetune", licence="MIT"))
    return registry


# -- the registry ----------------------------------------------------------------------------------------------


def test_builtins_are_the_official_checkpoints_and_debug() -> None:
    registry = ModelRegistry()
    names = ["small", "medium", "large", "melody", "stereo-small", "stereo-medium", "stereo-large", "stereo-melody"]
    assert registry.names() == [*names, "acestep", "acestep-base", "debug", "debug-acestep"]
    for name in names:
        spec = registry.get(name)
        assert spec.source == f"facebook/musicgen-{name}" and spec.kind == "base" and spec.licence == META_LICENCE
        assert spec.stereo == name.startswith("stereo") and spec.melody == name.endswith("melody")
        assert spec.engine == "musicgen" and not licence_terms(spec.licence).commercial
    for name, repo in (("acestep", "xl-turbo"), ("acestep-base", "xl-base")):
        spec = registry.get(name)
        assert spec.source == f"ACE-Step/acestep-v15-{repo}-diffusers" and spec.engine == "acestep" and spec.stereo
        assert licence_terms(spec.licence).line == "MIT: you may use this commercially"
    debug = registry.get("debug")
    assert debug.source == DEBUG_MODEL and debug.kind == "base" and "random" in debug.licence
    assert registry.get("debug-acestep").engine == "acestep"


def test_an_ace_step_lora_runs_on_its_base_engine_and_a_diffusers_directory_is_ace_step(tmp_path: Path) -> None:
    adapter = tmp_path / "house"
    adapter.mkdir()
    (adapter / "pytorch_lora_weights.safetensors").write_bytes(b"")
    registry = ModelRegistry(tmp_path / "models.json")
    stored = registry.register(ModelSpec(name="house", source=str(adapter), kind="lora", base="acestep"))
    assert stored.engine == "acestep" and stored.stereo
    with pytest.raises(RegistryError, match="LoRA adapter for MusicGen"):
        registry.register(ModelSpec(name="house2", source=str(adapter), kind="lora", base="small"))
    pipeline = tmp_path / "pipeline"
    pipeline.mkdir()
    (pipeline / "model_index.json").write_text("{}")
    assert registry.get(str(pipeline)).engine == "acestep"
    with pytest.raises(RegistryError, match="engine must be one of musicgen, acestep"):
        ModelSpec(name="x", source="a/b", engine="jukebox")


def test_directories_and_hub_ids_pass_through(tmp_path: Path, tiny_model_dir: Path) -> None:
    registry = ModelRegistry()
    spec = registry.get(str(tiny_model_dir))
    assert (spec.name, spec.source, spec.kind) == (str(tiny_model_dir), str(tiny_model_dir), "base")
    hub = registry.get("someone/my-musicgen")
    assert (hub.name, hub.source, hub.licence) == ("someone/my-musicgen", "someone/my-musicgen", "unknown")
    # An official id keeps the name it was asked by (jobs record it) and gets the built-in's facts.
    official = registry.get("facebook/musicgen-stereo-small")
    assert official.name == "facebook/musicgen-stereo-small" and official.stereo and official.licence == META_LICENCE
    with pytest.raises(ModelUnavailable, match=r"unknown model 'nonsense': use one of small, medium, .*debug"):
        registry.get("nonsense")
    with pytest.raises(ModelUnavailable, match="model directory /nowhere/musicgen does not exist"):
        registry.get("/nowhere/musicgen")
    with pytest.raises(ModelUnavailable, match="unknown model"):
        registry.get("two/slashes/here")


def test_register_list_and_remove(tmp_path: Path, tiny_model_dir: Path, adapter_dir: Path) -> None:
    registry = _registry(tmp_path, tiny_model_dir)
    lora = registry.register(
        ModelSpec(name="tiny-lofi", source=str(adapter_dir), kind="lora", base="tiny", stereo=True)
    )
    assert lora.stereo is False  # a lora takes its base's channels and melody input
    hub = registry.register(ModelSpec(name="hub-ft", source="someone/musicgen-ft", kind="finetune"))
    assert registry.get("tiny-lofi") == lora and registry.get("hub-ft") == hub and "tiny" in registry
    assert [s.name for s in registry.list()][-3:] == ["hub-ft", "tiny", "tiny-lofi"]
    assert registry.base_of(lora).name == "tiny"

    with pytest.raises(RegistryError, match="base of tiny-lofi"):
        registry.remove("tiny")
    assert registry.remove("tiny-lofi") == lora
    registry.remove("tiny")
    with pytest.raises(ModelUnavailable):
        registry.get("tiny")
    with pytest.raises(RegistryError, match="built-in"):
        registry.remove("small")
    with pytest.raises(RegistryError, match="no model named"):
        registry.remove("tiny")


@pytest.mark.parametrize(
    ("spec", "error"),
    [
        (ModelSpec(name="Bad Name", source="a/b"), "not a valid model name"),
        (ModelSpec(name="owner/name", source="a/b"), "not a valid model name"),
        (ModelSpec(name="small", source="a/b"), "built-in"),
        (ModelSpec(name="tiny", source="a/b"), "already registered"),
        (ModelSpec(name="x", source="/nowhere/model"), "does not exist"),
        (ModelSpec(name="x", source="not a source"), "neither a directory nor a Hugging Face id"),
        (ModelSpec(name="x", source="a/b", kind="lora", base="nope"), "base model 'nope' is not registered"),
        (ModelSpec(name="x", source="a/b", kind="lora", base="tiny-lofi"), "itself a lora"),
    ],
)
def test_register_validates(
    tmp_path: Path, tiny_model_dir: Path, adapter_dir: Path, spec: ModelSpec, error: str
) -> None:
    registry = _registry(tmp_path, tiny_model_dir)
    registry.register(ModelSpec(name="tiny-lofi", source=str(adapter_dir), kind="lora", base="tiny"))
    with pytest.raises(RegistryError, match=error):
        registry.register(spec)


def test_register_checks_directories_hold_the_right_thing(
    tmp_path: Path, tiny_model_dir: Path, adapter_dir: Path
) -> None:
    registry = _registry(tmp_path, tiny_model_dir)
    with pytest.raises(RegistryError, match=r"no adapter_config\.json"):  # a model is not an adapter
        registry.register(ModelSpec(name="x", source=str(tiny_model_dir), kind="lora", base="tiny"))
    with pytest.raises(RegistryError, match=r"no config\.json"):  # nor an adapter a model
        registry.register(ModelSpec(name="x", source=str(adapter_dir)))
    with pytest.raises(RegistryError, match="a lora needs a base"):
        ModelSpec(name="x", source=str(adapter_dir), kind="lora")
    with pytest.raises(RegistryError, match="kind must be one of"):
        ModelSpec(name="x", source="a/b", kind="merged")  # type: ignore[arg-type]
    with pytest.raises(RegistryError, match="no file"):
        ModelRegistry().register(ModelSpec(name="x", source="a/b"))
    # A directory not mounted yet can be registered on purpose.
    assert registry.register(ModelSpec(name="later", source="/mnt/later"), check_source=False).source == "/mnt/later"


def test_the_file_persists_and_other_instances_see_changes(tmp_path: Path, tiny_model_dir: Path) -> None:
    first = _registry(tmp_path, tiny_model_dir)
    data = json.loads((tmp_path / "models.json").read_text())
    assert data["models"][0] == {
        "name": "tiny",
        "source": str(tiny_model_dir),
        "kind": "finetune",
        "base": None,
        "licence": "MIT",
        "description": "",
        "melody": False,
        "stereo": False,
        "engine": "musicgen",
    }
    second = ModelRegistry(tmp_path / "models.json")
    assert second.get("tiny") == first.get("tiny")
    first.register(ModelSpec(name="hub-ft", source="someone/musicgen-ft"))
    assert second.get("hub-ft").source == "someone/musicgen-ft"  # re-read: another process wrote the file
    second.remove("hub-ft")
    with pytest.raises(ModelUnavailable):
        first.get("hub-ft")
    assert not list(tmp_path.glob(".models.json.*"))  # no temporary files left behind


def test_a_broken_file_is_reported_and_left_alone(tmp_path: Path, tiny_model_dir: Path) -> None:
    registry = _registry(tmp_path, tiny_model_dir)
    path = tmp_path / "models.json"
    path.write_text("{not json")
    assert registry.get("tiny").source == str(tiny_model_dir)  # keeps what it read before
    with pytest.raises(RegistryError, match="cannot be read"):
        registry.register(ModelSpec(name="x", source="a/b"))
    assert path.read_text() == "{not json"
    # Bad entries in a good file are skipped, the rest kept.
    path.write_text(json.dumps({"models": [{"name": "small", "source": "a/b"}, {"name": "ok", "source": "a/b"}, 3]}))
    assert [s.name for s in ModelRegistry(path).list()][-1] == "ok"


# -- the database ----------------------------------------------------------------------------------------------


async def test_registered_models_table_round_trip(
    sessions: async_sessionmaker[AsyncSession], tmp_path: Path, tiny_model_dir: Path, adapter_dir: Path
) -> None:
    async with sessions() as session:
        base = await model_registry.add_model(
            session, name="tiny-db", source=str(tiny_model_dir), kind="finetune", added_by=42, licence="MIT"
        )
        lora = await model_registry.add_model(
            session, name="tiny-db-lofi", source=str(adapter_dir), kind="lora", base="tiny-db", added_by=43
        )
        with pytest.raises(ModelAlreadyRegistered):
            await model_registry.add_model(session, name="tiny-db", source="a/b", kind="base", added_by=42)
        with pytest.raises(ValueError, match="kind must be one of"):
            await model_registry.add_model(session, name="x", source="a/b", kind="merged", added_by=42)
        with pytest.raises(ValueError, match="a lora needs a base"):
            await model_registry.add_model(session, name="x", source="a/b", kind="lora", added_by=42)
    async with sessions() as session:
        rows = await model_registry.list_models(session)
    assert rows == [base, lora]
    assert (rows[0].added_by, rows[1].added_by, rows[0].licence) == (42, 43, "MIT")
    assert rows[0].added_at.tzinfo is not None and rows[0].added_at <= rows[1].added_at

    file_registry = _registry(tmp_path, tiny_model_dir)
    registry = await load_registry(tmp_path / "models.json", sessions)
    assert registry.get("tiny-db") == ModelSpec(
        name="tiny-db", source=str(tiny_model_dir), kind="finetune", licence="MIT"
    )
    assert registry.base_of(registry.get("tiny-db-lofi")).name == "tiny-db"
    assert registry.get("tiny") == file_registry.get("tiny")  # file entries too
    assert file_registry.with_rows(rows).names() == registry.names()
    with pytest.raises(RegistryError, match="registered in the database"):
        registry.remove("tiny-db-lofi")
    with pytest.raises(RegistryError, match="registered in the database"):
        registry.register(ModelSpec(name="tiny-db", source="a/b"))

    async with sessions() as session:
        assert await model_registry.remove_model(session, "tiny-db-lofi") is True
        assert await model_registry.remove_model(session, "tiny-db-lofi") is False
        assert [r.name for r in await model_registry.list_models(session)] == ["tiny-db"]


def test_a_row_wins_over_a_file_entry_and_bad_rows_are_skipped(tmp_path: Path, tiny_model_dir: Path) -> None:
    _registry(tmp_path, tiny_model_dir)
    rows = [
        {"name": "tiny", "source": "someone/other", "kind": "base"},
        {"name": "large", "source": "someone/impostor"},  # may not shadow a built-in
        {"name": "broken", "source": "a/b", "kind": "merged"},
        {"name": "orphan", "source": "a/b", "kind": "lora", "base": "gone"},
    ]
    registry = ModelRegistry(tmp_path / "models.json", rows=rows)
    assert registry.get("tiny").source == "someone/other"
    assert registry.get("large").source == "facebook/musicgen-large"
    assert "broken" not in registry
    with pytest.raises(ModelUnavailable, match="needs base model 'gone'"):
        registry.base_of(registry.get("orphan"))


# -- LoRA and the cache ----------------------------------------------------------------------------------------


def test_lora_is_merged_into_a_private_copy(tmp_path: Path, tiny_model_dir: Path, adapter_dir: Path) -> None:
    registry = _registry(tmp_path, tiny_model_dir)
    registry.register(ModelSpec(name="tiny-lofi", source=str(adapter_dir), kind="lora", base="tiny"))
    cache = ModelCache(device="cpu", default="tiny", registry=registry)
    base = cache.get(None)
    before = _decoder_weight(base)
    lora = cache.get("tiny-lofi")
    assert lora is not base and lora.name == "tiny-lofi" and base.name == "tiny"
    assert not torch.equal(_decoder_weight(lora), before)  # q_proj got the adapter's delta
    key = "model.decoder.layers.0.self_attn.k_proj.weight"
    assert torch.equal(_decoder_weight(lora, key), _decoder_weight(base, key))  # k_proj was not a target
    assert torch.equal(_decoder_weight(base), before)  # the resident base is untouched
    # Merged: plain Linear layers, no adapter left to slow generation down.
    assert not any("lora" in name for name, _ in lora.model.named_modules())
    assert not hasattr(lora.model.decoder, "peft_config")
    # Switching back and forth serves the resident engines.
    assert cache.get("tiny") is base and cache.get("tiny-lofi") is lora and cache.get(None) is base
    assert cache.resident() == ["tiny-lofi", "tiny"]
    # The merged model generates.
    inputs = lora.processor(text=["lofi beat"], padding=True, return_tensors="pt")
    with torch.inference_mode():
        audio = lora.model.generate(**inputs, do_sample=False, guidance_scale=None, max_new_tokens=8)
    assert audio.shape[0] == 1 and torch.isfinite(audio).all()


def test_lora_merged_equals_the_adapter_delta(tmp_path: Path, tiny_model_dir: Path, adapter_dir: Path) -> None:
    """The merge is W + scale * B @ A, the same as peft's unmerged forward."""
    from peft import PeftModel

    registry = _registry(tmp_path, tiny_model_dir)
    registry.register(ModelSpec(name="tiny-lofi", source=str(adapter_dir), kind="lora", base="tiny"))
    merged = ModelCache(device="cpu", default="tiny-lofi", registry=registry).get(None)
    reference = PeftModel.from_pretrained(
        MusicgenForConditionalGeneration.from_pretrained(tiny_model_dir).decoder, adapter_dir
    )
    x = torch.randn(1, 3, 32)
    q_ref = reference.base_model.model.model.decoder.layers[0].self_attn.q_proj
    q_merged = merged.model.decoder.model.decoder.layers[0].self_attn.q_proj
    torch.testing.assert_close(q_merged(x), q_ref(x))


def test_lora_saved_from_the_whole_model_is_merged_too(tmp_path: Path, tiny_model_dir: Path) -> None:
    adapter = _save_adapter(tiny_model_dir, tmp_path / "whole-lora", whole_model=True)
    registry = _registry(tmp_path, tiny_model_dir)
    registry.register(ModelSpec(name="whole", source=str(adapter), kind="lora", base="tiny"))
    cache = ModelCache(device="cpu", default="tiny", registry=registry)
    assert not torch.equal(_decoder_weight(cache.get("whole")), _decoder_weight(cache.get("tiny")))
    assert isinstance(cache.get("whole").model, MusicgenForConditionalGeneration)


def test_a_lora_that_cannot_load_is_model_unavailable(tmp_path: Path, tiny_model_dir: Path) -> None:
    registry = _registry(tmp_path, tiny_model_dir)
    registry.register(ModelSpec(name="gone", source="/mnt/gone", kind="lora", base="tiny"), check_source=False)
    cache = ModelCache(device="cpu", default="tiny", registry=registry)
    with pytest.raises(ModelUnavailable, match="LoRA adapter '/mnt/gone' could not be applied"):
        cache.get("gone")
    assert cache.resident() == []


def test_eviction_by_memory_is_least_recently_used(tmp_path: Path, tiny_model_dir: Path, other_model_dir: Path) -> None:
    registry = _registry(tmp_path, tiny_model_dir)
    registry.register(ModelSpec(name="other", source=str(other_model_dir)))
    two = ModelCache(device="cpu", default="tiny", registry=registry, memory_gb=100)
    tiny = two.get("tiny")
    size = two.resident_bytes()
    assert size == engine_bytes(tiny) == module_bytes(tiny.model) > 0
    two.memory_gb = 2.5 * size / GIB  # room for two tiny models
    other = two.get("other")
    assert engine_bytes(other) == size and two.resident() == ["tiny", "other"]
    assert two.get("tiny") is tiny  # resident; now the most recently used
    two.get("debug")  # the same size again: "other", the least recently used, makes room
    assert two.resident() == ["tiny", "debug"]

    two.memory_gb = 1.5 * size / GIB  # room for one
    two.get("other")
    assert two.resident() == ["other"] and two.resident_bytes() == size
    assert two.get("tiny") is not tiny  # evicted, so reloaded
    assert two.resident() == ["tiny"]

    counted = ModelCache(device="cpu", default="tiny", registry=registry, max_resident=2, memory_gb=100)
    for name in ("tiny", "other", "debug"):
        counted.get(name)
    assert counted.resident() == ["other", "debug"]


def test_the_model_in_use_stays_even_over_budget(tiny_model_dir: Path) -> None:
    cache = ModelCache(device="cpu", default=str(tiny_model_dir), memory_gb=1e-9)
    engine = cache.get(None)
    assert cache.resident() == [str(tiny_model_dir)] and cache.get(None) is engine


def test_memory_budget() -> None:
    assert ModelCache(device="cpu", default="debug").budget_bytes() == 8 * GIB
    assert ModelCache(device="cpu", default="debug", memory_gb=1.5).budget_bytes() == int(1.5 * GIB)
    with pytest.raises(ValueError, match="max_resident"):
        ModelCache(device="cpu", default="debug", max_resident=0)
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.model_memory_gb == 0 and settings.model_registry_file == Path("./data/models.json")


def test_loading_never_blocks_a_resident_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """One load at a time, each model loaded once, and resident engines served while another loads."""
    real_load = MusicGenEngine.load
    loads: list[str] = []
    release = threading.Event()

    def slow_load(name: str, *, device: str = "cpu") -> MusicGenEngine:
        loads.append(name)
        if name == "facebook/musicgen-small":
            release.wait(30)
            return real_load("debug", device=device)
        return real_load(name, device=device)

    monkeypatch.setattr(models_module.MusicGenEngine, "load", staticmethod(slow_load))
    cache = ModelCache(device="cpu", default="debug")
    resident = cache.get(None)
    results: list[MusicGenEngine] = []
    threads = [threading.Thread(target=lambda: results.append(cache.get("small"))) for _ in range(3)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 10
    while "facebook/musicgen-small" not in loads and time.monotonic() < deadline:
        time.sleep(0.01)
    started = time.monotonic()
    assert cache.get("debug") is resident  # served while "small" is still loading
    assert time.monotonic() - started < 1
    release.set()
    for thread in threads:
        thread.join(30)
    assert loads == ["debug", "facebook/musicgen-small"]  # loaded once for three callers
    assert len(results) == 3 and results[0] is results[1] is results[2]
    assert results[0].name == "small" and cache.resident() == ["debug", "small"]
