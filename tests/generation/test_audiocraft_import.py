"""audiocraft → transformers MusicGen import, proven by round trip.

The tests write checkpoints in audiocraft's own layout by *inverting* the mapping here (fused q/k/v,
audiocraft module names, its EnCodec naming), so a conversion that gives back the original tensors
proves the mapping key by key.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from torch import Tensor
from transformers import MusicgenConfig, MusicgenForConditionalGeneration
from transformers.models.encodec.modeling_encodec import EncodecConv1d, EncodecConvTranspose1d

from beatforge.config import get_settings
from beatforge.contract import BeatParams
from cli.main import main
from generation.errors import GenerationError
from generation.music.audiocraft_import import AudiocraftImportError, import_audiocraft
from generation.music.engine import GeneratedAudio, generate
from generation.music.musicgen import MusicGenEngine
from generation.music.tiny import build_tiny_musicgen, save_tiny_musicgen

_LAYER_PARTS = {
    "self_attn_layer_norm": "norm1",
    "encoder_attn_layer_norm": "norm_cross",
    "final_layer_norm": "norm2",
    "fc1": "linear1",
    "fc2": "linear2",
    "self_attn.out_proj": "self_attn.out_proj",
    "encoder_attn.out_proj": "cross_attention.out_proj",
}
_OUTPUT_PROJ = "condition_provider.conditioners.description.output_proj"


def to_audiocraft_lm(model: MusicgenForConditionalGeneration) -> dict[str, Tensor]:
    """A transformers MusicGen's LM as audiocraft's ``LMModel.state_dict()`` would hold it."""
    state: dict[str, Tensor] = {}
    qkv: dict[tuple[str, str], dict[str, Tensor]] = {}
    for key, value in model.decoder.state_dict().items():
        value = value.clone()
        if m := re.fullmatch(r"model\.decoder\.embed_tokens\.(\d+)\.weight", key):
            state[f"emb.{m[1]}.weight"] = value
        elif m := re.fullmatch(r"lm_heads\.(\d+)\.weight", key):
            state[f"linears.{m[1]}.weight"] = value
        elif m := re.fullmatch(r"model\.decoder\.layer_norm\.(weight|bias)", key):
            state[f"out_norm.{m[1]}"] = value
        elif m := re.fullmatch(r"model\.decoder\.layers\.(\d+)\.(self_attn|encoder_attn)\.([qkv])_proj\.weight", key):
            qkv.setdefault((m[1], m[2]), {})[m[3]] = value
        elif m := re.fullmatch(r"model\.decoder\.layers\.(\d+)\.(.+)\.(weight|bias)", key):
            state[f"transformer.layers.{m[1]}.{_LAYER_PARTS[m[2]]}.{m[3]}"] = value
        else:
            raise AssertionError(f"unmapped transformers key {key}")
    for (layer, attn), proj in qkv.items():
        name = "self_attn" if attn == "self_attn" else "cross_attention"
        state[f"transformer.layers.{layer}.{name}.in_proj_weight"] = torch.cat([proj["q"], proj["k"], proj["v"]])
    if hasattr(model, "enc_to_dec_proj"):
        state[f"{_OUTPUT_PROJ}.weight"] = model.enc_to_dec_proj.weight.detach().clone()
        state[f"{_OUTPUT_PROJ}.bias"] = model.enc_to_dec_proj.bias.detach().clone()
    else:  # equal widths: audiocraft still projects, with what transformers leaves out (the identity)
        width = model.config.decoder.hidden_size
        state[f"{_OUTPUT_PROJ}.weight"], state[f"{_OUTPUT_PROJ}.bias"] = torch.eye(width), torch.zeros(width)
    return state


def to_audiocraft_encodec(model: MusicgenForConditionalGeneration) -> dict[str, Tensor]:
    """The EnCodec as audiocraft's SEANet/RVQ modules name it (old-style weight_norm g/v)."""
    codec = model.audio_encoder
    state: dict[str, Tensor] = {}
    for name, module in codec.named_modules():
        if isinstance(module, EncodecConv1d | EncodecConvTranspose1d):
            inner = "conv.conv" if isinstance(module, EncodecConv1d) else "convtr.convtr"
            where = re.sub(r"^(encoder|decoder)\.layers\.", r"\1.model.", name)
            for param, value in module.state_dict().items():
                suffix = {
                    "conv.parametrizations.weight.original0": "weight_g",
                    "conv.parametrizations.weight.original1": "weight_v",
                    "conv.bias": "bias",
                }[param]
                state[f"{where}.{inner}.{suffix}"] = value.clone()
    for key, value in codec.state_dict().items():
        if m := re.fullmatch(r"(encoder|decoder)\.layers\.(\d+)\.lstm\.(.+)", key):
            state[f"{m[1]}.model.{m[2]}.lstm.{m[3]}"] = value.clone()
        elif m := re.fullmatch(r"quantizer\.layers\.(\d+)\.codebook\.(.+)", key):
            state[f"quantizer.vq.layers.{m[1]}._codebook.{m[2]}"] = value.clone()
    assert len(state) == len(codec.state_dict())
    return state


def _exported(state: dict[str, Tensor], cfg: dict | None = None) -> dict:
    """``audiocraft.utils.export.export_lm``'s package: best state + the config as YAML text."""
    return {"best_state": state, "xp.cfg": yaml.safe_dump(cfg or {}), "version": "1.3.0", "exported": True}


def _assert_same(got: dict[str, Tensor], want: dict[str, Tensor]) -> None:
    assert got.keys() == want.keys()
    for key, value in want.items():
        assert torch.equal(got[key], value), key


def _wider_lm(seed: int = 1) -> MusicgenForConditionalGeneration:
    """A tiny MusicGen whose LM (48 wide, 6 heads, 3 layers) is wider than its T5: it has enc_to_dec_proj."""
    tiny, _ = build_tiny_musicgen(seed=seed)
    decoder = tiny.config.decoder.to_dict() | {
        "hidden_size": 48,
        "num_attention_heads": 6,
        "num_hidden_layers": 3,
        "ffn_dim": 96,
    }
    config = MusicgenConfig(
        text_encoder=tiny.config.text_encoder.to_dict(),
        audio_encoder=tiny.config.audio_encoder.to_dict(),
        decoder=decoder,
        decoder_start_token_id=64,
        pad_token_id=64,
    )
    torch.manual_seed(seed)
    model = MusicgenForConditionalGeneration(config).eval()
    with torch.no_grad():
        model.enc_to_dec_proj.bias.normal_()  # nonzero, so a dropped bias would show
    return model


def _generate(directory: Path, prompt: str) -> GeneratedAudio:
    """One second through the real engine (``generate`` returns the takes, or one take in older versions)."""
    result = generate(MusicGenEngine.load(str(directory)), BeatParams(prompt=prompt, duration_s=1.0, seed=3))
    return result[0] if isinstance(result, list) else result


class FakeNode:
    """Pickles like an omegaconf ValueNode (its value in ``_val``)."""

    def __init__(self, value: object) -> None:
        self._val = value


class FakeDictConfig:
    """Pickles like omegaconf's DictConfig, which a training ``checkpoint.th`` holds as ``xp.cfg``."""

    def __init__(self, content: dict) -> None:
        self._metadata, self._parent = None, None
        self._content = {k: FakeDictConfig(v) if isinstance(v, dict) else FakeNode(v) for k, v in content.items()}


@pytest.fixture(autouse=True)
def _fresh_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    monkeypatch.chdir(tmp_path)  # no stray .env; ./data lands in tmp
    monkeypatch.setenv("BEATFORGE_ARTIFACT_DIR", str(tmp_path / "data" / "artifacts"))
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_musicgen(tmp_path_factory.mktemp("base") / "tiny", seed=7)


def test_tiny_round_trip_equals_the_original_and_generates(tmp_path: Path, base_dir: Path) -> None:
    original, _ = build_tiny_musicgen(seed=0)
    checkpoint = tmp_path / "state_dict.bin"
    torch.save(_exported(to_audiocraft_lm(original)), checkpoint)

    imported = import_audiocraft(checkpoint, tmp_path / "out", base=str(base_dir))
    assert (imported.num_layers, imported.hidden_size, imported.num_heads, imported.ffn_dim) == (2, 32, 4, 64)
    assert (imported.num_codebooks, imported.vocab_size, imported.audio_channels) == (4, 64, 1)
    assert (imported.text_encoder, imported.audio_encoder) == ("base", "base")

    converted = MusicgenForConditionalGeneration.from_pretrained(imported.directory)
    base = MusicgenForConditionalGeneration.from_pretrained(base_dir)
    _assert_same(converted.decoder.state_dict(), original.decoder.state_dict())
    _assert_same(converted.text_encoder.state_dict(), base.text_encoder.state_dict())
    _assert_same(converted.audio_encoder.state_dict(), base.audio_encoder.state_dict())
    assert converted.generation_config.decoder_start_token_id == converted.generation_config.pad_token_id == 64

    audio = _generate(imported.directory, "dark trap beat")
    assert audio.samples.shape == (1, 32_000)
    assert np.isfinite(audio.samples).all() and np.abs(audio.samples).max() > 0


def test_wider_lm_with_projection_from_a_training_checkpoint(tmp_path: Path, base_dir: Path) -> None:
    """Heads from the (pickled omegaconf) config, enc_to_dec_proj from output_proj, a fine-tuned T5 too."""
    original = _wider_lm()
    # audiocraft's non-custom attention (torch's MultiheadAttention) nests its weights under .mha.
    state = {key.replace(".self_attn.", ".self_attn.mha."): value for key, value in to_audiocraft_lm(original).items()}
    for key, value in original.text_encoder.state_dict().items():
        state[f"condition_provider.conditioners.description.t5.{key}"] = value.clone()
    cfg = FakeDictConfig({"transformer_lm": {"num_heads": 6, "dim": 48, "positional_embedding": "sin"}})
    checkpoint = tmp_path / "checkpoint.th"
    torch.save({"best_state": {"model": state}, "fsdp_best_state": {}, "xp.cfg": cfg, "epoch": 3}, checkpoint)

    imported = import_audiocraft(checkpoint, tmp_path / "wide", base=str(base_dir))
    assert (imported.hidden_size, imported.num_heads, imported.num_layers, imported.text_encoder) == (
        48,
        6,
        3,
        "checkpoint",
    )
    converted = MusicgenForConditionalGeneration.from_pretrained(imported.directory)
    _assert_same(converted.decoder.state_dict(), original.decoder.state_dict())
    _assert_same(converted.enc_to_dec_proj.state_dict(), original.enc_to_dec_proj.state_dict())
    _assert_same(converted.text_encoder.state_dict(), original.text_encoder.state_dict())


def test_stereo_and_an_audiocraft_encodec(tmp_path: Path) -> None:
    original, _ = build_tiny_musicgen(audio_channels=2, seed=0)
    export = tmp_path / "export"
    export.mkdir()
    torch.save(_exported(to_audiocraft_lm(original)), export / "state_dict.bin")
    torch.save(_exported(to_audiocraft_encodec(original)), export / "compression_state_dict.bin")
    stereo_base = save_tiny_musicgen(tmp_path / "stereo-base", audio_channels=2, seed=5)

    imported = import_audiocraft(export, tmp_path / "stereo", base=str(stereo_base))
    assert (imported.num_codebooks, imported.audio_channels, imported.audio_encoder) == (8, 2, "checkpoint")
    converted = MusicgenForConditionalGeneration.from_pretrained(imported.directory)
    assert converted.config.decoder.audio_channels == 2
    _assert_same(converted.decoder.state_dict(), original.decoder.state_dict())
    _assert_same(converted.audio_encoder.state_dict(), original.audio_encoder.state_dict())

    audio = _generate(imported.directory, "lofi")
    assert audio.samples.shape == (2, 32_000)


def test_a_pretrained_pointer_reuses_the_base_encodec(tmp_path: Path, base_dir: Path) -> None:
    original, _ = build_tiny_musicgen(seed=0)
    export = tmp_path / "export"
    export.mkdir()
    torch.save(_exported(to_audiocraft_lm(original)), export / "state_dict.bin")
    pointer = {"pretrained": "facebook/encodec_32khz", "exported": True, "version": "1.3.0"}
    torch.save(pointer, export / "compression_state_dict.bin")
    imported = import_audiocraft(export, tmp_path / "out", base=str(base_dir))
    assert imported.audio_encoder == "base"
    assert any("facebook/encodec_32khz" in note for note in imported.notes)


def test_cli_imports_into_the_models_folder(tmp_path: Path, base_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    original, _ = build_tiny_musicgen(seed=0)
    checkpoint = tmp_path / "finetune.bin"
    torch.save(_exported(to_audiocraft_lm(original)), checkpoint)

    assert main(["--json", "model", "import-audiocraft", str(checkpoint), "my-beats", "--base", str(base_dir)]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    directory = tmp_path / "data" / "models" / "my-beats"
    assert Path(summary["directory"]).resolve() == directory.resolve()
    assert summary["name"] == "my-beats"
    assert (directory / "config.json").is_file()
    converted = MusicgenForConditionalGeneration.from_pretrained(directory)
    _assert_same(converted.decoder.state_dict(), original.decoder.state_dict())

    if summary["registered"]:  # registered as a fine-tune in the registry file, under its name
        from generation.music.registry import ModelRegistry

        spec = ModelRegistry(get_settings().model_registry_file).get("my-beats")
        assert (spec.kind, Path(spec.source)) == ("finetune", directory.resolve())

    # neither a taken name nor an occupied directory is overwritten
    again = ["model", "import-audiocraft", str(checkpoint)]
    assert main([*again, "my-beats", "--base", str(base_dir)]) == 1
    assert "already" in capsys.readouterr().err
    assert main([*again, "other", "--base", str(base_dir), "--out", str(directory)]) == 1
    assert "already exists and is not empty" in capsys.readouterr().err
    assert main([*again, "Bad/Name", "--base", str(base_dir)]) == 1
    assert "lowercase" in capsys.readouterr().err


def test_bad_inputs_give_clear_errors(tmp_path: Path, base_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("this is not a checkpoint\n")
    with pytest.raises(AudiocraftImportError, match="not a torch checkpoint"):
        import_audiocraft(text, tmp_path / "a", base=str(base_dir))
    assert (
        main(["model", "import-audiocraft", str(text), "x", "--base", str(base_dir), "--out", str(tmp_path / "b")]) == 1
    )
    assert capsys.readouterr().err.startswith("beatforge: notes.txt is not a torch checkpoint")

    no_lm = tmp_path / "encoder_only.bin"
    torch.save({"best_state": {"encoder.model.0.conv.conv.weight_g": torch.ones(2, 1, 1)}}, no_lm)
    with pytest.raises(AudiocraftImportError, match="not a MusicGen LM checkpoint"):
        import_audiocraft(no_lm, tmp_path / "c", base=str(base_dir))

    state = to_audiocraft_lm(build_tiny_musicgen(seed=0)[0])
    broken = dict(state)
    broken["transformer.layers.1.self_attn.in_proj_weight"] = torch.zeros(64, 32)
    torch.save(broken, tmp_path / "broken.bin")
    with pytest.raises(AudiocraftImportError, match=r"fused q/k/v projection"):
        import_audiocraft(tmp_path / "broken.bin", tmp_path / "d", base=str(base_dir))

    narrow = dict(state)
    narrow["transformer.layers.0.linear2.weight"] = torch.zeros(32, 16)
    torch.save(narrow, tmp_path / "narrow.bin")
    with pytest.raises(AudiocraftImportError, match=r"linear2|fc2"):
        import_audiocraft(tmp_path / "narrow.bin", tmp_path / "e", base=str(base_dir))

    melody = dict(state) | {"condition_provider.conditioners.self_wav.chroma.window": torch.ones(4)}
    torch.save(melody, tmp_path / "melody.bin")
    with pytest.raises(AudiocraftImportError, match="self_wav"):
        import_audiocraft(tmp_path / "melody.bin", tmp_path / "f", base=str(base_dir))

    torch.save(state, tmp_path / "ok.bin")
    with pytest.raises(AudiocraftImportError, match="base model") as info:
        import_audiocraft(tmp_path / "ok.bin", tmp_path / "g", base=str(tmp_path / "no-such-model"))
    assert isinstance(info.value, GenerationError)

    stereo_lm = to_audiocraft_lm(build_tiny_musicgen(audio_channels=2)[0])
    stereo_lm["emb.8.weight"], stereo_lm["linears.8.weight"] = torch.zeros(65, 32), torch.zeros(64, 32)
    torch.save(stereo_lm, tmp_path / "nine.bin")
    with pytest.raises(AudiocraftImportError, match="9 codebooks"):
        import_audiocraft(tmp_path / "nine.bin", tmp_path / "h", base=str(base_dir))

    assert not any((tmp_path / d).exists() for d in "acdefgh")  # nothing half-written
