"""Turn an audiocraft-trained MusicGen checkpoint into a transformers ``MusicgenForConditionalGeneration``.

audiocraft (which pins an old torch) trains and fine-tunes MusicGen; beatforge runs it through
transformers. This module reads what audiocraft writes and saves the same model in the transformers
layout (``save_pretrained`` + a processor), so ``MusicGenEngine.load(directory)`` (generation/music/musicgen.py)
serves it.

What an audiocraft MusicGen is made of, and where each part comes from here:

* the language model (LM): always from the checkpoint (``state_dict.bin`` from ``export_lm``, or a
  training ``checkpoint.th``). Its sizes (layers, width, feed-forward, codebooks, vocabulary) are read
  from the tensor shapes, so small/medium/large and mono/stereo all convert;
* the EnCodec audio tokenizer: from an audiocraft compression checkpoint when one holds weights, else
  (the usual case for fine-tunes, whose ``compression_state_dict.bin`` only names
  ``facebook/encodec_32khz``) copied from the *base* model;
* the T5 text encoder: from the checkpoint when T5 was fine-tuned too, else copied from the base.

The base is any local transformers MusicGen (directory or cached HF id): it supplies the encoders,
their configs and the processor. Every MusicGen size shares t5-base and EnCodec 32 kHz, so
``facebook/musicgen-small`` serves as the base for a medium or large fine-tune; a stereo fine-tune may
use a mono base (transformers decodes the left and right codebooks with the same EnCodec).

The key mapping is the one of transformers' ``convert_musicgen_transformers.py`` (audiocraft's fused
``in_proj_weight`` split into q/k/v; ``condition_provider...output_proj`` becomes ``enc_to_dec_proj``),
written here as exact patterns rather than substring replacements.
"""

from __future__ import annotations

import copy
import logging
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from transformers import (
    MusicgenDecoderConfig,
    MusicgenForCausalLM,
    MusicgenForConditionalGeneration,
    MusicgenProcessor,
)

from generation.hf import evaluating, sub_config
from generation.music.audiocraft_checkpoint import AudiocraftImportError, load_torch_file, unwrap_checkpoint
from generation.music.tiny import DEBUG_MODEL, build_tiny_musicgen
from storage.files import atomic_directory

log = logging.getLogger(__name__)

DEFAULT_BASE = "facebook/musicgen-small"
#: audiocraft's export folder: the LM and the compression model side by side.
LM_FILE, COMPRESSION_FILE = "state_dict.bin", "compression_state_dict.bin"
#: The registry's name rule (generation/registry.py NAME_PATTERN): lowercase, no slash.
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
_TEXT = "condition_provider.conditioners.description."


@dataclass(frozen=True, slots=True)
class ImportedModel:
    """What :func:`import_audiocraft` wrote, and what the model is."""

    directory: Path
    num_layers: int
    hidden_size: int
    num_heads: int
    ffn_dim: int
    num_codebooks: int
    vocab_size: int
    audio_channels: int
    text_encoder: str  # "checkpoint" (fine-tuned T5) or "base"
    audio_encoder: str  # "checkpoint" (own EnCodec) or "base"
    notes: tuple[str, ...] = field(default=())

    def info(self) -> dict[str, Any]:
        return {**asdict(self), "directory": str(self.directory), "notes": list(self.notes)}


# --- the language model -------------------------------------------------------------------------

_LAYER_PARTS = {
    "self_attn.out_proj.weight": "self_attn.out_proj.weight",
    "cross_attention.out_proj.weight": "encoder_attn.out_proj.weight",
    "norm1.weight": "self_attn_layer_norm.weight",
    "norm1.bias": "self_attn_layer_norm.bias",
    "norm_cross.weight": "encoder_attn_layer_norm.weight",
    "norm_cross.bias": "encoder_attn_layer_norm.bias",
    "norm2.weight": "final_layer_norm.weight",
    "norm2.bias": "final_layer_norm.bias",
    "linear1.weight": "fc1.weight",
    "linear2.weight": "fc2.weight",
}
_FUSED = {"self_attn.in_proj_weight": "self_attn", "cross_attention.in_proj_weight": "encoder_attn"}
_LAYER = re.compile(r"^transformer\.layers\.(\d+)\.(.+)$")
_EMB = re.compile(r"^emb\.(\d+)\.weight$")
_HEAD = re.compile(r"^linears\.(\d+)\.weight$")


@dataclass(slots=True)
class _LMParts:
    decoder: dict[str, Tensor]  # MusicgenForCausalLM keys
    projection: dict[str, Tensor]  # enc_to_dec_proj (weight, bias)
    text_encoder: dict[str, Tensor]  # T5EncoderModel keys, when T5 was fine-tuned


def _is_lm_key(key: str) -> bool:
    return bool(_LAYER.match(key) or _EMB.match(key) or _HEAD.match(key))


def _strip_prefix(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Drop a wrapper prefix (``module.``, ``lm.``, ``model.``) that every key carries, and torch.compile's."""
    if any("_orig_mod." in key for key in state):
        state = {key.replace("_orig_mod.", ""): value for key, value in state.items()}
    for prefix in ("module.", "lm.", "model."):
        if state and all(key.startswith(prefix) for key in state):
            return _strip_prefix({key[len(prefix) :]: value for key, value in state.items()})
    return state


def split_lm_state(state: dict[str, Tensor]) -> _LMParts:
    """Rename audiocraft LM keys to transformers ones, splitting each fused q/k/v projection.

    Raises:
        AudiocraftImportError: keys this architecture does not have (melody/style conditioners,
            attention biases, layer scale, ...) or a fused projection whose shape is not 3 × width.
    """
    parts = _LMParts({}, {}, {})
    unknown: list[str] = []
    for key, value in state.items():
        # audiocraft's non-custom attention wraps torch's nn.MultiheadAttention (same names, under .mha.)
        key = re.sub(r"\.(self_attn|cross_attention)\.mha\.", r".\1.", key)
        if m := _EMB.match(key):
            parts.decoder[f"model.decoder.embed_tokens.{m[1]}.weight"] = value
        elif m := _HEAD.match(key):
            parts.decoder[f"lm_heads.{m[1]}.weight"] = value
        elif key in ("out_norm.weight", "out_norm.bias"):
            parts.decoder[f"model.decoder.layer_norm.{key.rsplit('.', 1)[1]}"] = value
        elif key.startswith(_TEXT + "output_proj."):
            parts.projection[key.rsplit(".", 1)[1]] = value
        elif key.startswith(_TEXT + "t5."):
            parts.text_encoder[key[len(_TEXT + "t5.") :]] = value
        elif (m := _LAYER.match(key)) and m[2] in _LAYER_PARTS:
            parts.decoder[f"model.decoder.layers.{m[1]}.{_LAYER_PARTS[m[2]]}"] = value
        elif (m := _LAYER.match(key)) and m[2] in _FUSED:
            width = value.shape[-1]
            if value.ndim != 2 or value.shape[0] != 3 * width:
                raise AudiocraftImportError(
                    f"{key} has shape {tuple(value.shape)}; a fused q/k/v projection is (3 × {width}, {width})"
                )
            prefix = f"model.decoder.layers.{m[1]}.{_FUSED[m[2]]}"
            for i, name in enumerate(("q_proj", "k_proj", "v_proj")):
                parts.decoder[f"{prefix}.{name}.weight"] = value[i * width : (i + 1) * width]
        else:
            unknown.append(key)
    if unknown:
        conditioners = sorted(
            {k.split(".")[2] for k in unknown if k.startswith("condition_provider.conditioners.")} - {"description"}
        )
        hint = (
            f"conditioners {', '.join(conditioners)} (melody/style/CLAP MusicGen variants) are not supported"
            if conditioners
            else "this MusicGen uses features transformers' MusicGen lacks (attention/FFN biases, layer scale, ...)"
        )
        shown = ", ".join(unknown[:5]) + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else "")
        raise AudiocraftImportError(f"unexpected keys in the LM checkpoint: {shown}; {hint}")
    return parts


def _indices(keys: list[str], pattern: re.Pattern[str]) -> list[int]:
    return sorted({int(m[1]) for key in keys if (m := pattern.match(key))})


def _lm_shape(
    state: dict[str, Tensor], cfg: dict[str, Any], num_heads: int | None, base_decoder: Any
) -> dict[str, int]:
    """Read the decoder's sizes from the tensor shapes (heads: the config, the base, or width / 64)."""
    keys = list(state)
    layers, codebooks, heads_idx = _indices(keys, _LAYER), _indices(keys, _EMB), _indices(keys, _HEAD)
    for what, found in (("transformer layers", layers), ("codebook embeddings", codebooks)):
        if found != list(range(len(found))) or not found:
            raise AudiocraftImportError(f"the LM checkpoint's {what} are incomplete (indices {found[:8]}...)")
    if heads_idx != codebooks:
        raise AudiocraftImportError(f"{len(codebooks)} codebook embeddings but {len(heads_idx)} output heads")
    emb, head = state["emb.0.weight"], state["linears.0.weight"]
    hidden, vocab = int(emb.shape[1]), int(head.shape[0])
    if emb.shape[0] != vocab + 1 or head.shape[1] != hidden:
        raise AudiocraftImportError(
            f"embedding {tuple(emb.shape)} and output head {tuple(head.shape)} do not fit together "
            "(expected (vocab + 1, width) and (vocab, width))"
        )
    ffn_key = "transformer.layers.0.linear1.weight"
    if ffn_key not in state:
        raise AudiocraftImportError(f"the LM checkpoint has no {ffn_key}")
    raw_lm_cfg = cfg.get("transformer_lm")
    lm_cfg: dict[str, Any] = raw_lm_cfg if isinstance(raw_lm_cfg, dict) else {}
    for option, supported in (("positional_embedding", "sin"), ("activation", "gelu"), ("norm", "layer_norm")):
        if lm_cfg.get(option, supported) != supported:
            raise AudiocraftImportError(
                f"transformer_lm.{option} is {lm_cfg[option]!r}; transformers' MusicGen supports only {supported!r}"
            )
    if lm_cfg.get("norm_first", True) is not True:
        raise AudiocraftImportError("transformer_lm.norm_first is false; transformers' MusicGen is pre-norm only")
    heads = num_heads or lm_cfg.get("num_heads")
    if not heads and base_decoder.hidden_size == hidden:
        heads = base_decoder.num_attention_heads
    if not heads and hidden % 64 == 0:
        heads = hidden // 64  # every released MusicGen uses 64-wide heads (1024/16, 1536/24, 2048/32)
    if not heads or hidden % int(heads):
        raise AudiocraftImportError(f"cannot tell the number of attention heads for width {hidden}")
    return {
        "num_hidden_layers": len(layers),
        "hidden_size": hidden,
        "num_attention_heads": int(heads),
        "ffn_dim": int(state[ffn_key].shape[0]),
        "num_codebooks": len(codebooks),
        "vocab_size": vocab,
    }


# --- EnCodec ------------------------------------------------------------------------------------


def encodec_key(key: str) -> str:
    """An audiocraft EnCodec (SEANet + RVQ) key as transformers' ``EncodecModel`` names it."""
    key = re.sub(r"^(encoder|decoder)\.model\.", r"\1.layers.", key)
    key = key.replace(".conv.conv.", ".conv.").replace(".convtr.convtr.", ".conv.")
    key = key.replace(".conv.norm.", ".norm.").replace(".convtr.norm.", ".norm.")
    key = re.sub(r"^quantizer\.vq\.layers\.(\d+)\._codebook\.", r"quantizer.layers.\1.codebook.", key)
    return key


def _load_encodec(audio_encoder: torch.nn.Module, state: dict[str, Tensor], path: Path) -> None:
    expected = audio_encoder.state_dict()
    renamed: dict[str, Tensor] = {}
    for key, value in _strip_prefix(state).items():
        new = encodec_key(key)
        if new not in expected:  # old-style weight_norm names ↔ torch's parametrizations
            for old, param in ((".weight_g", ".parametrizations.weight.original0"),
                               (".weight_v", ".parametrizations.weight.original1")):  # fmt: skip
                if new.endswith(old) and new[: -len(old)] + param in expected:
                    new = new[: -len(old)] + param
                elif new.endswith(param) and new[: -len(param)] + old in expected:
                    new = new[: -len(param)] + old
        renamed[new] = value
    missing = sorted(set(expected) - set(renamed))
    unexpected = sorted(set(renamed) - set(expected))
    if missing or unexpected:
        raise AudiocraftImportError(
            f"{path.name} does not fit the base model's EnCodec: "
            f"missing {missing[:4]}{'...' if len(missing) > 4 else ''}, "
            f"unexpected {unexpected[:4]}{'...' if len(unexpected) > 4 else ''}"
        )
    _copy_into(audio_encoder, renamed, f"{path.name} (EnCodec)")


def _copy_into(module: torch.nn.Module, state: dict[str, Tensor], what: str) -> None:
    expected = module.state_dict()
    for key, value in state.items():
        if key in expected and tuple(expected[key].shape) != tuple(value.shape):
            raise AudiocraftImportError(
                f"{what}: {key} has shape {tuple(value.shape)}, the model expects {tuple(expected[key].shape)}"
            )
    module.load_state_dict(state, strict=False)


# --- the whole import ---------------------------------------------------------------------------


def _load_base(base: str) -> tuple[MusicgenForConditionalGeneration, MusicgenProcessor]:
    if base == DEBUG_MODEL:
        return build_tiny_musicgen()
    source = str(Path(base).expanduser()) if Path(base).expanduser().is_dir() else base
    try:
        processor = MusicgenProcessor.from_pretrained(source)
        model = MusicgenForConditionalGeneration.from_pretrained(source, dtype=torch.float32)
    except (OSError, ValueError, RuntimeError, KeyError, TypeError) as exc:
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise AudiocraftImportError(
            f"the base model {base!r} could not be loaded ({first}); it supplies the text and audio encoders, "
            "so pass --base a local transformers MusicGen directory or a Hugging Face id already in the cache"
        ) from exc
    return evaluating(model), processor


def _audio_channels(num_codebooks: int, cfg: dict[str, Any], base_decoder: Any) -> int:
    per_channel = int(base_decoder.num_codebooks) // int(base_decoder.audio_channels or 1)
    stereo_cfg = cfg.get("interleave_stereo_codebooks")
    if isinstance(stereo_cfg, dict) and stereo_cfg.get("use"):
        channels = 2
    elif num_codebooks == per_channel:
        channels = 1
    elif num_codebooks == 2 * per_channel:
        channels = 2
    else:
        raise AudiocraftImportError(
            f"the LM has {num_codebooks} codebooks, the base model's EnCodec makes {per_channel} per channel; "
            "pick a base with the same audio tokenizer"
        )
    if num_codebooks != channels * per_channel:
        raise AudiocraftImportError(f"a stereo LM needs {2 * per_channel} codebooks, this one has {num_codebooks}")
    return channels


def resolve_checkpoint(checkpoint: Path, compression: Path | None) -> tuple[Path, Path | None]:
    """A file is the LM; a directory is audiocraft's export folder (``state_dict.bin`` + compression)."""
    checkpoint = Path(checkpoint).expanduser()
    if checkpoint.is_dir():
        lm = checkpoint / LM_FILE
        if not lm.is_file():
            raise AudiocraftImportError(f"{checkpoint} has no {LM_FILE} (audiocraft's exported LM)")
        if compression is None and (checkpoint / COMPRESSION_FILE).is_file():
            compression = checkpoint / COMPRESSION_FILE
        return lm, compression
    return checkpoint, compression


def check_name(name: str) -> str:
    if not _NAME.match(name):
        raise AudiocraftImportError(
            f"model name {name!r} must be 1-64 lowercase letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return name


@torch.no_grad()
def import_audiocraft(
    checkpoint: Path,
    out: Path,
    *,
    base: str = DEFAULT_BASE,
    compression: Path | None = None,
    num_heads: int | None = None,
) -> ImportedModel:
    """Convert ``checkpoint`` (audiocraft LM, or its export folder) and save it to ``out``.

    ``out`` must not exist or be empty; it is written through a temporary sibling, so a failure
    leaves nothing half-written.

    Raises:
        AudiocraftImportError: unreadable or foreign file, no LM keys, unsupported architecture,
            shapes that do not fit, an unloadable base, or an occupied ``out``.
    """
    out = Path(out).expanduser()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise AudiocraftImportError(f"{out} already exists and is not empty; remove it or choose another --out")
    lm_path, compression = resolve_checkpoint(checkpoint, compression)
    state, cfg = unwrap_checkpoint(load_torch_file(lm_path), lm_path)
    state = _strip_prefix(state)
    if not any(_is_lm_key(key) for key in state):
        sample = ", ".join(list(state)[:3]) or "nothing"
        raise AudiocraftImportError(
            f"{lm_path.name} is not a MusicGen LM checkpoint: no transformer.layers.* / emb.* / linears.* keys "
            f"(it starts with {sample})"
        )
    notes: list[str] = []
    base_model, processor = _load_base(base)
    shape = _lm_shape(state, cfg, num_heads, base_model.config.decoder)
    channels = _audio_channels(shape["num_codebooks"], cfg, base_model.config.decoder)
    codebook_size = int(sub_config(base_model.config.audio_encoder, part="audio encoder").codebook_size)
    if shape["vocab_size"] != codebook_size:
        raise AudiocraftImportError(
            f"the LM predicts {shape['vocab_size']} codes per codebook, the base model's EnCodec has {codebook_size}"
        )
    parts = split_lm_state(state)

    decoder_cfg = sub_config(base_model.config.decoder, part="decoder").to_dict()
    decoder_cfg.update(
        shape,
        audio_channels=channels,
        pad_token_id=shape["vocab_size"],
        bos_token_id=shape["vocab_size"],
        cross_attention_hidden_size=None,
        tie_word_embeddings=False,
    )
    decoder = evaluating(MusicgenForCausalLM(MusicgenDecoderConfig.from_dict(decoder_cfg)))
    expected = decoder.state_dict()
    missing = sorted(set(expected) - set(parts.decoder))
    unexpected = sorted(set(parts.decoder) - set(expected))
    if missing or unexpected:
        raise AudiocraftImportError(
            f"the LM checkpoint does not fit: missing {missing[:4]}, unexpected {unexpected[:4]}"
        )
    _copy_into(decoder, parts.decoder, lm_path.name)

    text_encoder, audio_encoder = copy.deepcopy(base_model.text_encoder), copy.deepcopy(base_model.audio_encoder)
    text_source = "base"
    if parts.text_encoder:
        t5_expected = set(text_encoder.state_dict())
        t5_missing = t5_expected - set(parts.text_encoder) - {"encoder.embed_tokens.weight"}  # tied to shared
        t5_unexpected = set(parts.text_encoder) - t5_expected
        if t5_missing or t5_unexpected:
            raise AudiocraftImportError(
                f"the fine-tuned T5 in {lm_path.name} does not fit the base's text encoder: "
                f"missing {sorted(t5_missing)[:4]}, unexpected {sorted(t5_unexpected)[:4]}"
            )
        _copy_into(text_encoder, parts.text_encoder, f"{lm_path.name} (T5)")
        text_source = "checkpoint"

    audio_source = "base"
    if compression is not None:
        codec_state, codec_cfg = unwrap_checkpoint(load_torch_file(compression), compression)
        if codec_state:
            _load_encodec(audio_encoder, codec_state, compression)
            audio_source = "checkpoint"
        else:
            notes.append(
                f"{compression.name} points at {codec_cfg.get('pretrained')!r}; the base model's EnCodec is used"
            )

    model = evaluating(
        MusicgenForConditionalGeneration(text_encoder=text_encoder, audio_encoder=audio_encoder, decoder=decoder)
    )
    text_width, width = int(text_encoder.config.hidden_size), shape["hidden_size"]
    _load_projection(model, parts.projection, text_width, width, lm_path)

    model.config.decoder_start_token_id = model.config.pad_token_id = shape["vocab_size"]
    generation = copy.deepcopy(base_model.generation_config)
    generation.decoder_start_token_id = generation.pad_token_id = generation.bos_token_id = shape["vocab_size"]
    model.generation_config = generation
    _smoke_test(model, shape)

    with atomic_directory(out) as partial:  # ``out`` was checked absent or empty above
        model.save_pretrained(partial)
        processor.save_pretrained(partial)
    log.info("audiocraft checkpoint imported", extra={"out": str(out), **shape})
    return ImportedModel(
        directory=out,
        num_layers=shape["num_hidden_layers"],
        hidden_size=width,
        num_heads=shape["num_attention_heads"],
        ffn_dim=shape["ffn_dim"],
        num_codebooks=shape["num_codebooks"],
        vocab_size=shape["vocab_size"],
        audio_channels=channels,
        text_encoder=text_source,
        audio_encoder=audio_source,
        notes=tuple(notes),
    )


def _load_projection(
    model: MusicgenForConditionalGeneration, projection: dict[str, Tensor], text_width: int, width: int, path: Path
) -> None:
    """audiocraft always projects T5's output; transformers only when the widths differ."""
    if "weight" not in projection:
        raise AudiocraftImportError(f"{path.name} has no {_TEXT}output_proj.weight (the text-to-LM projection)")
    weight = projection["weight"]
    if tuple(weight.shape) != (width, text_width):
        raise AudiocraftImportError(
            f"{_TEXT}output_proj.weight has shape {tuple(weight.shape)}; with the base's text encoder "
            f"({text_width} wide) and this LM ({width} wide) it must be {(width, text_width)}"
        )
    if hasattr(model, "enc_to_dec_proj"):
        _copy_into(model.enc_to_dec_proj, projection, f"{path.name} (output_proj)")
        return
    bias = projection.get("bias", torch.zeros(width))
    if not (torch.allclose(weight.float(), torch.eye(width)) and torch.allclose(bias.float(), torch.zeros(width))):
        raise AudiocraftImportError(
            "the text encoder is as wide as the LM, so transformers' MusicGen has no projection between them, "
            "but this checkpoint's output_proj is not the identity"
        )


def _smoke_test(model: MusicgenForConditionalGeneration, shape: dict[str, int]) -> None:
    """One forward step, as transformers' own conversion checks: logits (codebooks, 1, vocab)."""
    input_ids = torch.ones((1, 4), dtype=torch.long)
    decoder_input_ids = torch.full((shape["num_codebooks"], 1), shape["vocab_size"], dtype=torch.long)
    try:
        logits = model(input_ids=input_ids, decoder_input_ids=decoder_input_ids).logits
    except (RuntimeError, ValueError, IndexError) as exc:
        raise AudiocraftImportError(f"the converted model does not run: {str(exc).splitlines()[0][:200]}") from exc
    if tuple(logits.shape) != (shape["num_codebooks"], 1, shape["vocab_size"]):
        raise AudiocraftImportError(f"the converted model gives logits of shape {tuple(logits.shape)}")


# --- registration -------------------------------------------------------------------------------


def import_and_register(
    checkpoint: Path,
    name: str,
    *,
    out: Path,
    base: str = DEFAULT_BASE,
    compression: Path | None = None,
    registry_file: Path | None = None,
) -> dict[str, Any]:
    """:func:`import_audiocraft`, then register ``name`` → ``out`` as a ``finetune`` in the registry file.

    The name is checked against the registry before the (slow) conversion. Without a registry file
    (or registry module) the model is still written; ``registered`` is False in the summary.

    Raises:
        AudiocraftImportError: as :func:`import_audiocraft`, or the registry refuses the name.
    """
    check_name(name)
    registry = _registry(registry_file)
    if registry is not None and name in registry:
        raise AudiocraftImportError(f"a model named {name!r} is already registered; pick another name")
    imported = import_audiocraft(checkpoint, out, base=base, compression=compression)
    summary = {"name": name, **imported.info(), "registered": False}
    if registry is None:
        return summary
    from generation.music.registry import ModelSpec, RegistryError

    channels = "stereo" if imported.audio_channels == 2 else "mono"
    spec = ModelSpec(
        name=name,
        source=str(imported.directory.resolve()),
        kind="finetune",
        licence="as the audiocraft checkpoint's (fine-tunes of Meta's MusicGen: CC-BY-NC 4.0, non-commercial)",
        description=(
            f"imported from audiocraft ({Path(checkpoint).name}): {imported.num_layers} layers, "
            f"{imported.hidden_size} wide, {channels}"
        ),
        stereo=imported.audio_channels == 2,
    )
    try:
        registry.register(spec)
    except RegistryError as exc:
        raise AudiocraftImportError(f"the model was written to {imported.directory} but not registered: {exc}") from exc
    return {**summary, "registered": True}


def _registry(registry_file: Path | None) -> Any:
    if registry_file is None:
        return None
    try:
        from generation.music.registry import ModelRegistry
    except ImportError:  # pragma: no cover - the registry ships beside this module
        return None
    return ModelRegistry(Path(registry_file))
