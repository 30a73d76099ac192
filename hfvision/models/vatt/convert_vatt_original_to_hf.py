"""Convert an official VATT checkpoint (TensorFlow) to an hfvision VATT folder (config, safetensors, processor, card).

The official release (https://github.com/google-research/google-research/tree/master/vatt, README "Checkpoints")
ships TensorFlow object-based checkpoints (`ckpt-N.index` + `ckpt-N.data-00000-of-00001`): the official
`Executor.train` saves `tf.train.Checkpoint(model=keras_model, optimizer=optimizer)` where `keras_model` is a
functional `tf.keras.Model` around the official model (`experiments/{base,pretrain,finetune}.py`). Variables are
therefore named by their object path, `model/layer_with_weights-0/<attribute path>/.ATTRIBUTES/VARIABLE_VALUE`,
beside the optimizer's slots (`.../.OPTIMIZER_SLOT/optimizer/m/...`) and state (`optimizer/...`), `save_counter`
and the object graph, which are dropped (training state). The official `utils/train/restore.py` reads the released
pretraining checkpoints under exactly these names; the parity fixture checks that its mapping finds them.

Released models this converter handles (the README's tables), and the hfvision class each becomes:
- pretraining, modality-specific (`tx_fac_bbs`, `tx_fac_mbs`, `tx_fac_lbs`) and modality-agnostic
  (`ut_fac_medium`) -> [`VattModel`] (`modality_agnostic=True` for the latter);
- fine-tuned video classifiers (Kinetics-400/600/700, Moments in Time; ViT Base/Medium/Large, also those fine-tuned
  from the modality-agnostic model, whose video tower carries VATT-MA's pre- and post-projections) ->
  [`VattForVideoClassification`] (single-label);
- fine-tuned audio classifiers (AudioSet, WaT Base and WaT Medium from the modality-agnostic model) ->
  [`VattForAudioClassification`] (`problem_type="multi_label_classification"`: the official head is a sigmoid).
Refused with the reason: MMV/I3D/ResNet backbones and the spectrogram transformer (`spt_*`), which hfvision does not
implement, the BERT-style masking token (`mask_embedding`, off in every released config) and any tensor this
layout does not explain.

Where each official tensor goes (official attribute path -> hfvision name; `P` = `_base_layer/vid_backbone/_base/` or
`_base_layer/aud_backbone/_base/` in pretraining checkpoints, `_base/` in a fine-tuned classifier; `<m>` the modality):

- `P voxel_to_patch` (kernel (t, h, w, 3, D)) / `P wave_to_patch` (kernel (p, 1, D)) ->
  `video_embeddings.patch_embeddings` (Conv3d) / `audio_embeddings.patch_embeddings` (Conv1d);
- `P pos_embedding_lookup/{temporal,vertical,horizontal}_position_embeddings/embeddings` and `.../layernorm` ->
  `<m>_embeddings.{temporal,vertical,horizontal}_position_embeddings` and `<m>_embeddings.position_layernorm`;
- `P agg_embedding` -> `<m>_embeddings.agg_token`; in classifiers fine-tuned from VATT-MA `P pre_proj` and
  `P post_proj` -> `<m>_embeddings.pre_projection` and `<m>_post_projection.0`;
- `P tx/layers/i/{layer_norm, mha/{q,k,v,o}, feed_forward/layer_norm, feed_forward/mlp/{wi,wo}}` ->
  `<m>_encoder.layers.i.{layernorm_before, attention.{query,key,value,output}, layernorm_after, mlp.{fc1,fc2}}`,
  `P tx/final_layer_norm` -> `<m>_encoder.layernorm` (`encoder.*` in VATT-MA, one transformer for all);
- `_base_layer/txt_backbone/{embedding/embeddings, agg_embedding, pre_proj/kernel}` ->
  `text_embeddings.{word_embeddings.weight, agg_token, word_projection.weight}`;
- `.../txt_backbone/base_lm/layers/i/self_attention/{layer_norm/weight, attention/{q,k,v,o}/kernel}` and
  `.../feed_forward/{layer_norm, mlp/wi, mlp/wo}` -> `text_encoder.layers.i.{layernorm_before, attention.*,
  layernorm_after, mlp.fc1, mlp.fc2}`; layer 0's `attention/relative_attention_bias/embeddings` ->
  `text_encoder.relative_position_bias.relative_attention_bias.weight` (shared by the layers, as the official
  encoder passes it on); `base_lm/final_layer_norm/weight` -> `text_encoder.layernorm.weight`;
- `_head_layer/_bridge_heads/0/{vid_to_hid, hid_to_va/pre_bn, hid_to_va/dense, hid_to_va/bn}` ->
  `projection_heads.video_to_va.{0,1,3,4}`; `va_to_vat/{dense,bn}` -> `projection_heads.video_va_to_vt.{1,2}`;
  `aud_to_va`, `txt_to_vat` -> `projection_heads.audio_to_va`, `projection_heads.text_to_vt`;
- VATT-MA (`_base_layer/unified_backbone/unified_transformer/`): `raw_to_embeddings/{video,audio,text}` ->
  `{video,audio}_embeddings.patch_embeddings`, `text_embeddings.word_embeddings`; `pre_proj/{video,audio,text}` ->
  `{video,audio}_embeddings.pre_projection`, `text_embeddings.word_projection`; `pos_embedding_lookup/<m>/...` ->
  the embeddings' position tables and LayerNorms (`text_embeddings.position_embeddings` for text);
  `{vid,aud,txt}_agg_embedding` -> `<m>_embeddings.agg_token`; `tx/...` -> `encoder.*`; `post_proj/<m>` ->
  `<m>_post_projection.0`;
- `_ops/cls/{kernel,bias}` (fine-tuned classifiers) -> `classifier.{weight,bias}`.

Dense kernels `(in, out)` are transposed to `nn.Linear` weights; convolution kernels get their output channels first;
BatchNorm `gamma`, `beta`, `moving_mean`, `moving_variance` become `weight`, `bias`, `running_mean`, `running_var`
(`num_batches_tracked`, which Keras does not keep, is set to 0). The architecture is read from the shapes: widths,
depths, tubelet and patch sizes, the position tables (frames = temporal buckets x tubelet time, image size = spatial
buckets x tubelet size, audio samples = temporal buckets x patch), the common-space sizes, the vocabulary and the
class count. Not stored, so set to the official configs' values unless `--preset` / `--config_file` say otherwise:
attention heads (width / 64, the official d_kv), the audio sampling rate (48 kHz), the text length of the
modality-specific tower (16 words) and T5's maximum relative distance (64). Every tensor is mapped and its shape
checked against the hfvision model (no missing, no unexpected key) before anything is written.

The word ids are the official vocabulary's (`misc_data.tgz` of the official README, not available here): a checkpoint
with a text tower needs `--vocab_file`, that vocabulary in the format DMVR's `WordTokenizer` reads (the official data
pipeline's tokenizer: one `word` or `index word` per line); the folder's tokenizer reproduces DMVR's word splitting
(ASCII punctuation removed, lower-cased, split on whitespace, unknown words -> `<unk>`; no BOS/EOS, DMVR's default,
not checked in VATT's data loader; non-ASCII capitals are lower-cased too, which TensorFlow's ASCII `lower` leaves).
The word embeddings stay frozen (`freeze_word_embeddings=True`), as the official configs keep them.

    python -m hfvision.models.vatt.convert_vatt_original_to_hf \
        --checkpoint_path tx_fac_bbs/ckpt-500000 --vocab_file path/to/word_vocabulary.txt --preset vatt-bbs \
        --output_dir vatt-bbs [--push_to_hub your-org/vatt-bbs]

The checkpoint is read with `tf.train.load_checkpoint` (TensorFlow is needed for that step only; the conversion
itself works on a `{name: numpy array}` dict, `convert_variables`).
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import PreTrainedModel
from transformers.utils.logging import tqdm

from .configuration_vatt import VattConfig
from .feature_extraction_vatt import VattFeatureExtractor
from .image_processing_vatt import VattVideoProcessor
from .modeling_vatt import VattForAudioClassification, VattForVideoClassification, VattModel
from .processing_vatt import VattProcessor

OFFICIAL_CODE = "https://github.com/google-research/google-research/tree/master/vatt"
MODEL_PREFIX = "model/layer_with_weights-0/"
VARIABLE_SUFFIX = "/.ATTRIBUTES/VARIABLE_VALUE"
# Values the checkpoints do not store: those of every official config (configs/{video,audio,text,unified}.py).
OFFICIAL_HEAD_DIM = 64
OFFICIAL_SAMPLING_RATE = 48000
OFFICIAL_MAX_WORDS = 16
OFFICIAL_MAX_RELATIVE_DISTANCE = 64
# What the official model's attribute paths start with, per kind of checkpoint.
VIDEO_PRETRAIN, AUDIO_PRETRAIN = "_base_layer/vid_backbone/_base/", "_base_layer/aud_backbone/_base/"
TEXT_PRETRAIN, UNIFIED = "_base_layer/txt_backbone/", "_base_layer/unified_backbone/unified_transformer/"
HEAD, CLASSIFIER_TOWER, CLASSIFIER = "_head_layer/_bridge_heads/0/", "_base/", "_ops/cls/"
KINDS = ("modality_specific", "modality_agnostic", "video_classifier", "audio_classifier")
COPY, DENSE, CONV = "copy", "dense", "conv"
TRANSFORMER_FIELDS = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")


def _is_training_state(key: str) -> bool:
    """Optimizer slots and state, `save_counter` and the object graph of an official checkpoint."""
    return (
        key == "_CHECKPOINTABLE_OBJECT_GRAPH"
        or key.startswith(("optimizer/", "save_counter/"))
        or "/.OPTIMIZER_SLOT/" in key
    )


def load_tf_checkpoint(checkpoint_path: str | Path) -> dict[str, np.ndarray]:
    """The entries of a TensorFlow checkpoint (`ckpt-N` prefix, its `.index` file or its folder) as numpy arrays by
    checkpoint key, training state left out (`_is_training_state`: the optimizer slots would triple the memory).

    Raises:
        ImportError: if TensorFlow is not installed.
        FileNotFoundError: if no checkpoint is found at `checkpoint_path`.
    """
    try:
        import tensorflow as tf
    except ImportError as error:
        raise ImportError(
            "Reading an official VATT checkpoint needs TensorFlow (`pip install tensorflow-cpu`); the conversion "
            "itself (`convert_variables`) works on a dict of numpy arrays without it."
        ) from error
    path = str(checkpoint_path).removesuffix(".index")
    if Path(path).is_dir():
        path = tf.train.latest_checkpoint(path) or path
    if not Path(path + ".index").is_file():
        raise FileNotFoundError(f"checkpoint_path {checkpoint_path}: no `{Path(path).name}.index` there")
    reader = tf.train.load_checkpoint(path)
    keys = [key for key in reader.get_variable_to_shape_map() if not _is_training_state(key)]
    return {key: np.asarray(reader.get_tensor(key)) for key in tqdm(keys, desc="reading the checkpoint")}


def model_variables(variables: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The model's variables by attribute path (`model/layer_with_weights-0/` and `/.ATTRIBUTES/VARIABLE_VALUE` cut).

    Optimizer slots and state, `save_counter` and the object graph are dropped; any other entry keeps its full key,
    so that the mapping reports it as unexpected.
    """
    kept = {}
    for key, value in variables.items():
        if _is_training_state(key):
            continue
        if key.startswith(MODEL_PREFIX) and key.endswith(VARIABLE_SUFFIX):
            key = key[len(MODEL_PREFIX) : -len(VARIABLE_SUFFIX)]
        kept[key] = value
    return kept


def checkpoint_kind(names: Any) -> str:
    """`modality_specific`, `modality_agnostic`, `video_classifier` or `audio_classifier`.

    Raises:
        ValueError: for checkpoints of backbones hfvision does not implement, or none recognised.
    """
    names = set(names)
    if any("spectrum_to_patch" in name for name in names):
        raise ValueError("a spectrogram-transformer (SpT) checkpoint: hfvision implements the waveform audio tower")
    if f"{VIDEO_PRETRAIN}voxel_to_patch/kernel" in names:
        return "modality_specific"
    if f"{UNIFIED}raw_to_embeddings/video/kernel" in names:
        return "modality_agnostic"
    if f"{CLASSIFIER_TOWER}voxel_to_patch/kernel" in names:
        return "video_classifier"
    if f"{CLASSIFIER_TOWER}wave_to_patch/kernel" in names:
        return "audio_classifier"
    raise ValueError(
        "not a VATT Transformer checkpoint (no ViT, WaT or UniversalVATT tokenizer; the MMV/I3D/ResNet backbones are "
        f"not implemented in hfvision); first variables: {sorted(names)[:5]}"
    )


def _layers(names: Any, prefix: str) -> int:
    indices = {int(match.group(1)) for name in names if (match := re.match(rf"{re.escape(prefix)}(\d+)/", name))}
    return len(indices)


def _shape(variables: dict[str, np.ndarray], name: str) -> tuple[int, ...]:
    if name not in variables:
        raise ValueError(f"the checkpoint lacks `{name}`, which gives the architecture")
    return tuple(variables[name].shape)


def _tower(variables: dict[str, np.ndarray], tx: str, head_dim: int) -> dict[str, int]:
    """Transformer sizes of an official `TransformerEncoder` whose attribute path is `tx` (`.../tx/`)."""
    hidden = _shape(variables, f"{tx}layers/0/mha/q/kernel")[0]
    if hidden % head_dim:
        raise ValueError(f"width {hidden} is not a multiple of head_dim {head_dim}; pass --config_file")
    return {
        "hidden_size": hidden,
        "intermediate_size": _shape(variables, f"{tx}layers/0/feed_forward/mlp/wi/kernel")[1],
        "num_hidden_layers": _layers(variables, f"{tx}layers/"),
        "num_attention_heads": hidden // head_dim,
    }


def _video_input(variables: dict[str, np.ndarray], kernel: str, positions: str) -> dict[str, Any]:
    time, height, width, channels, _ = _shape(variables, kernel)
    grid = [
        _shape(variables, f"{positions}{axis}_position_embeddings/embeddings")[0]
        for axis in ("temporal", "vertical", "horizontal")
    ]
    if grid[1] * height != grid[2] * width:
        raise ValueError(f"non-square frames ({grid[1] * height} x {grid[2] * width}): VattVideoConfig has one size")
    return {
        "num_channels": channels,
        "tubelet_size": [time, height, width],
        "num_frames": grid[0] * time,
        "image_size": grid[1] * height,
    }


def _audio_input(variables: dict[str, np.ndarray], kernel: str, positions: str) -> dict[str, Any]:
    patch = _shape(variables, kernel)[0]
    buckets = _shape(variables, f"{positions}temporal_position_embeddings/embeddings")[0]
    return {"patch_size": patch, "num_samples": buckets * patch, "sampling_rate": OFFICIAL_SAMPLING_RATE}


def config_from_variables(
    variables: dict[str, np.ndarray], head_dim: int = OFFICIAL_HEAD_DIM, id2label: dict[int, str] | None = None
) -> VattConfig:
    """The [`VattConfig`] of an official checkpoint (attribute-path names, see `model_variables`), from its shapes.

    Args:
        variables: the model's variables.
        head_dim: attention head width (not stored; 64 in every official config).
        id2label: class names of a classifier (default `LABEL_<i>`).
    """
    kind = checkpoint_kind(variables)
    if kind == "modality_specific":
        text = TEXT_PRETRAIN
        vocab_size, embedding_size = _shape(variables, f"{text}embedding/embeddings")
        text_heads = _shape(
            variables, f"{text}base_lm/layers/0/self_attention/attention/relative_attention_bias/embeddings"
        )
        text_hidden = _shape(variables, f"{text}pre_proj/kernel")[1]
        return VattConfig(
            video_config={
                **_tower(variables, f"{VIDEO_PRETRAIN}tx/", head_dim),
                **_video_input(
                    variables, f"{VIDEO_PRETRAIN}voxel_to_patch/kernel", f"{VIDEO_PRETRAIN}pos_embedding_lookup/"
                ),
            },
            audio_config={
                **_tower(variables, f"{AUDIO_PRETRAIN}tx/", head_dim),
                **_audio_input(
                    variables, f"{AUDIO_PRETRAIN}wave_to_patch/kernel", f"{AUDIO_PRETRAIN}pos_embedding_lookup/"
                ),
            },
            text_config={
                "vocab_size": vocab_size,
                "embedding_size": embedding_size,
                "hidden_size": text_hidden,
                "intermediate_size": _shape(variables, f"{text}base_lm/layers/0/feed_forward/mlp/wi/kernel")[1],
                "num_hidden_layers": _layers(variables, f"{text}base_lm/layers/"),
                "num_attention_heads": text_heads[1],
                "relative_attention_num_buckets": text_heads[0],
                "relative_attention_max_distance": OFFICIAL_MAX_RELATIVE_DISTANCE,
                "max_position_embeddings": OFFICIAL_MAX_WORDS,
                "freeze_word_embeddings": True,  # `trainable_embeddings=False` in every official text config
            },
            d_va=_shape(variables, f"{HEAD}vid_to_hid/kernel")[1],
            d_vt=_shape(variables, f"{HEAD}txt_to_vat/kernel")[1],
        )
    if kind == "modality_agnostic":
        sizes = _tower(variables, f"{UNIFIED}tx/", head_dim)
        vocab_size, embedding_size = _shape(variables, f"{UNIFIED}raw_to_embeddings/text/embeddings")
        positions = f"{UNIFIED}pos_embedding_lookup/"
        return VattConfig(
            modality_agnostic=True,
            post_projection_size=_shape(variables, f"{UNIFIED}post_proj/video/kernel")[1],
            video_config={
                **sizes,
                **_video_input(variables, f"{UNIFIED}raw_to_embeddings/video/kernel", f"{positions}video/"),
            },
            audio_config={
                **sizes,
                **_audio_input(variables, f"{UNIFIED}raw_to_embeddings/audio/kernel", f"{positions}audio/"),
            },
            text_config={
                **sizes,
                "vocab_size": vocab_size,
                "embedding_size": embedding_size,
                "max_position_embeddings": _shape(
                    variables, f"{positions}text/temporal_position_embeddings/embeddings"
                )[0],
                "freeze_word_embeddings": True,  # `txt_embedding_trainable=False` in the official UniversalVATT
            },
            d_va=_shape(variables, f"{HEAD}vid_to_hid/kernel")[1],
            d_vt=_shape(variables, f"{HEAD}txt_to_vat/kernel")[1],
        )
    sizes = _tower(variables, f"{CLASSIFIER_TOWER}tx/", head_dim)
    agnostic = f"{CLASSIFIER_TOWER}pre_proj/kernel" in variables
    num_labels = _shape(variables, f"{CLASSIFIER}kernel")[1]
    positions = f"{CLASSIFIER_TOWER}pos_embedding_lookup/"
    if kind == "video_classifier":
        tower = {
            "video_config": {**sizes, **_video_input(variables, f"{CLASSIFIER_TOWER}voxel_to_patch/kernel", positions)}
        }
    else:
        tower = {
            "audio_config": {**sizes, **_audio_input(variables, f"{CLASSIFIER_TOWER}wave_to_patch/kernel", positions)}
        }
    extra: dict[str, Any] = {}
    if agnostic:  # VATT-MA shares one transformer: every sub-config gets its sizes
        extra["post_projection_size"] = _shape(variables, f"{CLASSIFIER_TOWER}post_proj/kernel")[1]
        tower = {name: {**sizes, **tower.get(name, {})} for name in ("video_config", "audio_config", "text_config")}
    if kind == "audio_classifier":
        extra["problem_type"] = "multi_label_classification"  # the official AudioSet head is a sigmoid
    return VattConfig(
        modality_agnostic=agnostic,
        id2label=id2label or {index: f"LABEL_{index}" for index in range(num_labels)},
        **tower,
        **extra,
    )


def _encoder_pairs(official: str, hf: str, layers: int) -> list[tuple[str, str, str]]:
    """The official `TransformerEncoder` (`transformers.py`) at attribute path `official` -> `VattEncoder` `hf`."""
    pairs = [
        (f"{official}final_layer_norm/gamma", f"{hf}.layernorm.weight", COPY),
        (f"{official}final_layer_norm/beta", f"{hf}.layernorm.bias", COPY),
    ]
    for index in range(layers):
        source, target = f"{official}layers/{index}/", f"{hf}.layers.{index}."
        for norm, name in (("layer_norm", "layernorm_before"), ("feed_forward/layer_norm", "layernorm_after")):
            pairs += [
                (f"{source}{norm}/gamma", f"{target}{name}.weight", COPY),
                (f"{source}{norm}/beta", f"{target}{name}.bias", COPY),
            ]
        for dense, name in (
            ("mha/q", "attention.query"),
            ("mha/k", "attention.key"),
            ("mha/v", "attention.value"),
            ("mha/o", "attention.output"),
            ("feed_forward/mlp/wi", "mlp.fc1"),
            ("feed_forward/mlp/wo", "mlp.fc2"),
        ):
            pairs += [
                (f"{source}{dense}/kernel", f"{target}{name}.weight", DENSE),
                (f"{source}{dense}/bias", f"{target}{name}.bias", COPY),
            ]
    return pairs


def _t5_pairs(official: str, hf: str, layers: int) -> list[tuple[str, str, str]]:
    """The official `T5Encoder` (`text/t5.py`, bias-free) at attribute path `official` -> `VattEncoder(t5=True)`."""
    pairs = [
        (f"{official}final_layer_norm/weight", f"{hf}.layernorm.weight", COPY),
        (
            f"{official}layers/0/self_attention/attention/relative_attention_bias/embeddings",
            f"{hf}.relative_position_bias.relative_attention_bias.weight",
            COPY,
        ),
    ]
    for index in range(layers):
        source, target = f"{official}layers/{index}/", f"{hf}.layers.{index}."
        pairs += [
            (f"{source}self_attention/layer_norm/weight", f"{target}layernorm_before.weight", COPY),
            (f"{source}feed_forward/layer_norm/gamma", f"{target}layernorm_after.weight", COPY),
            (f"{source}feed_forward/layer_norm/beta", f"{target}layernorm_after.bias", COPY),
            (f"{source}feed_forward/mlp/wi/kernel", f"{target}mlp.fc1.weight", DENSE),
            (f"{source}feed_forward/mlp/wo/kernel", f"{target}mlp.fc2.weight", DENSE),
        ]
        for letter, name in (("q", "query"), ("k", "key"), ("v", "value"), ("o", "output")):
            pairs.append(
                (f"{source}self_attention/attention/{letter}/kernel", f"{target}attention.{name}.weight", DENSE)
            )
    return pairs


def _dense(official: str, hf: str, bias: bool = True) -> list[tuple[str, str, str]]:
    return [(f"{official}/kernel", f"{hf}.weight", DENSE)] + (
        [(f"{official}/bias", f"{hf}.bias", COPY)] if bias else []
    )


def _norm(official: str, hf: str) -> list[tuple[str, str, str]]:
    return [(f"{official}/gamma", f"{hf}.weight", COPY), (f"{official}/beta", f"{hf}.bias", COPY)]


def _batch_norm(official: str, hf: str) -> list[tuple[str, str, str]]:
    return [
        *_norm(official, hf),
        (f"{official}/moving_mean", f"{hf}.running_mean", COPY),
        (f"{official}/moving_variance", f"{hf}.running_var", COPY),
    ]


def _embedding_pairs(official: str, modality: str, positions: str) -> list[tuple[str, str, str]]:
    """A ViTx3D / AuTx1D tokenizer, position tables and LayerNorm (`positions` = their attribute path)."""
    hf = f"{modality}_embeddings"
    axes = ("temporal", "vertical", "horizontal") if modality == "video" else ("temporal",)
    pairs = [
        (f"{official}/kernel", f"{hf}.patch_embeddings.weight", CONV),
        (f"{official}/bias", f"{hf}.patch_embeddings.bias", COPY),
    ]
    pairs += [
        (f"{positions}{axis}_position_embeddings/embeddings", f"{hf}.{axis}_position_embeddings", COPY) for axis in axes
    ]
    return pairs + _norm(f"{positions}layernorm", f"{hf}.position_layernorm")


def _head_pairs() -> list[tuple[str, str, str]]:
    """The official FAC bridge head (`heads/bridge.py`) -> `projection_heads`."""
    heads = "projection_heads"
    return (
        _dense(f"{HEAD}vid_to_hid", f"{heads}.video_to_va.0", bias=False)
        + _batch_norm(f"{HEAD}hid_to_va/pre_bn", f"{heads}.video_to_va.1")
        + _dense(f"{HEAD}hid_to_va/dense", f"{heads}.video_to_va.3", bias=False)
        + _batch_norm(f"{HEAD}hid_to_va/bn", f"{heads}.video_to_va.4")
        + _dense(f"{HEAD}va_to_vat/dense", f"{heads}.video_va_to_vt.1", bias=False)
        + _batch_norm(f"{HEAD}va_to_vat/bn", f"{heads}.video_va_to_vt.2")
        + _dense(f"{HEAD}aud_to_va", f"{heads}.audio_to_va")
        + _dense(f"{HEAD}txt_to_vat", f"{heads}.text_to_vt")
    )


def key_mapping(config: VattConfig, kind: str) -> list[tuple[str, str, str]]:
    """Every official variable (attribute path) of a `kind` checkpoint of `config`, its hfvision name and operation.

    Returns:
        `(official, hf, operation)` triples; `operation` is `"copy"`, `"dense"` (a Keras `(in, out)` kernel becomes
        an `nn.Linear` weight) or `"conv"` (output channels first).
    """
    if kind not in KINDS:
        raise ValueError(f"`kind` must be one of {KINDS}, got {kind!r}")
    video, audio, text = config.video_config, config.audio_config, config.text_config
    if kind == "modality_specific":
        if config.modality_agnostic:
            raise ValueError("a modality-specific checkpoint needs `modality_agnostic=False`")
        pairs = _embedding_pairs(f"{VIDEO_PRETRAIN}voxel_to_patch", "video", f"{VIDEO_PRETRAIN}pos_embedding_lookup/")
        pairs += [(f"{VIDEO_PRETRAIN}agg_embedding", "video_embeddings.agg_token", COPY)]
        pairs += _encoder_pairs(f"{VIDEO_PRETRAIN}tx/", "video_encoder", video.num_hidden_layers)
        pairs += _embedding_pairs(f"{AUDIO_PRETRAIN}wave_to_patch", "audio", f"{AUDIO_PRETRAIN}pos_embedding_lookup/")
        pairs += [(f"{AUDIO_PRETRAIN}agg_embedding", "audio_embeddings.agg_token", COPY)]
        pairs += _encoder_pairs(f"{AUDIO_PRETRAIN}tx/", "audio_encoder", audio.num_hidden_layers)
        pairs += [
            (f"{TEXT_PRETRAIN}embedding/embeddings", "text_embeddings.word_embeddings.weight", COPY),
            (f"{TEXT_PRETRAIN}agg_embedding", "text_embeddings.agg_token", COPY),
            (f"{TEXT_PRETRAIN}pre_proj/kernel", "text_embeddings.word_projection.weight", DENSE),
        ]
        pairs += _t5_pairs(f"{TEXT_PRETRAIN}base_lm/", "text_encoder", text.num_hidden_layers)
        return pairs + _head_pairs()
    if kind == "modality_agnostic":
        if not config.modality_agnostic:
            raise ValueError("a modality-agnostic (UniversalVATT) checkpoint needs `modality_agnostic=True`")
        positions = f"{UNIFIED}pos_embedding_lookup/"
        pairs = _embedding_pairs(f"{UNIFIED}raw_to_embeddings/video", "video", f"{positions}video/")
        pairs += _embedding_pairs(f"{UNIFIED}raw_to_embeddings/audio", "audio", f"{positions}audio/")
        pairs += [
            (f"{UNIFIED}raw_to_embeddings/text/embeddings", "text_embeddings.word_embeddings.weight", COPY),
            (f"{positions}text/temporal_position_embeddings/embeddings", "text_embeddings.position_embeddings", COPY),
        ]
        pairs += _norm(f"{positions}text/layernorm", "text_embeddings.position_layernorm")
        for modality, short in (("video", "vid"), ("audio", "aud"), ("text", "txt")):
            projection = "word_projection" if modality == "text" else "pre_projection"
            pairs += _dense(f"{UNIFIED}pre_proj/{modality}", f"{modality}_embeddings.{projection}")
            pairs += _dense(f"{UNIFIED}post_proj/{modality}", f"{modality}_post_projection.0")
            pairs.append((f"{UNIFIED}{short}_agg_embedding", f"{modality}_embeddings.agg_token", COPY))
        pairs += _encoder_pairs(f"{UNIFIED}tx/", "encoder", video.num_hidden_layers)
        return pairs + _head_pairs()
    modality = "video" if kind == "video_classifier" else "audio"
    kernel = "voxel_to_patch" if modality == "video" else "wave_to_patch"
    tower = video if modality == "video" else audio
    pairs = _embedding_pairs(f"{CLASSIFIER_TOWER}{kernel}", modality, f"{CLASSIFIER_TOWER}pos_embedding_lookup/")
    pairs += [(f"{CLASSIFIER_TOWER}agg_embedding", f"{modality}_embeddings.agg_token", COPY)]
    if config.modality_agnostic:
        pairs += _dense(f"{CLASSIFIER_TOWER}pre_proj", f"{modality}_embeddings.pre_projection")
        pairs += _dense(f"{CLASSIFIER_TOWER}post_proj", f"{modality}_post_projection.0")
        pairs += _encoder_pairs(f"{CLASSIFIER_TOWER}tx/", "encoder", tower.num_hidden_layers)
    else:
        pairs += _encoder_pairs(f"{CLASSIFIER_TOWER}tx/", f"{modality}_encoder", tower.num_hidden_layers)
    return pairs + _dense(CLASSIFIER.rstrip("/"), "classifier")


def model_class(kind: str) -> type[PreTrainedModel]:
    """The hfvision class a `kind` checkpoint converts to."""
    if kind == "video_classifier":
        return VattForVideoClassification
    if kind == "audio_classifier":
        return VattForAudioClassification
    return VattModel


def _converted(value: np.ndarray, operation: str) -> torch.Tensor:
    if operation == DENSE:
        value = value.T
    elif operation == CONV:  # Keras (*kernel, in, out) -> torch (out, in, *kernel)
        value = np.transpose(value, (value.ndim - 1, value.ndim - 2, *range(value.ndim - 2)))
    return torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32))


def convert_variables(
    variables: dict[str, np.ndarray], config: VattConfig | None = None, head_dim: int = OFFICIAL_HEAD_DIM
) -> tuple[VattConfig, dict[str, torch.Tensor], str]:
    """Official checkpoint entries -> the config and state dict of the hfvision model, checked completely.

    Args:
        variables: the checkpoint's entries by key (`load_tf_checkpoint`), or already by attribute path.
        config: the model's config (default: read from the shapes, see `config_from_variables`).
        head_dim: attention head width when the config is read from the shapes.

    Returns:
        `(config, state_dict, kind)`; `model_class(kind)(config)` loads the state dict strictly.

    Raises:
        ValueError: listing the official variables without a counterpart, those the model needs but the checkpoint
            lacks, and shape mismatches, each by name.
    """
    variables = model_variables(variables)
    kind = checkpoint_kind(variables)
    if config is None:
        config = config_from_variables(variables, head_dim)
    mapping = key_mapping(config, kind)
    with torch.device("meta"):
        expected = model_class(kind)(config).state_dict()
    mapped = {official for official, _, _ in mapping}
    unexpected = sorted(set(variables) - mapped)
    missing = sorted(mapped - set(variables))
    problems, state_dict = [], {}
    for official, hf, operation in mapping:
        if official not in variables:
            continue
        tensor = _converted(variables[official], operation)
        if hf not in expected:
            problems.append(f"{official} -> {hf}: no such tensor in {model_class(kind).__name__}")
        elif tensor.shape != expected[hf].shape:
            problems.append(f"{official} {tuple(variables[official].shape)} -> {hf} {tuple(expected[hf].shape)}")
        else:
            state_dict[hf] = tensor
    for name in expected:
        if name.endswith(".num_batches_tracked"):  # not kept by Keras
            state_dict[name] = torch.zeros((), dtype=torch.long)
    unfilled = sorted(set(expected) - set(state_dict) - {hf for official, hf, _ in mapping if official in missing})
    if unexpected or missing or problems or unfilled:
        raise ValueError(
            f"the checkpoint does not map onto {model_class(kind).__name__}; nothing was written:\n"
            + "\n".join(
                [f"  unexpected (no counterpart): {name}" for name in unexpected]
                + [f"  missing (not in the checkpoint): {name}" for name in missing]
                + [f"  {problem}" for problem in problems]
                + [f"  not filled by the mapping: {name}" for name in unfilled]
            )
        )
    return config, state_dict, kind


def check_preset(config: VattConfig, preset: str, kind: str) -> None:
    """Raise a `ValueError` naming the differences unless `config` has the architecture of preset `preset`."""
    expected = VattConfig.from_preset(preset)
    towers = {"video_classifier": ("video",), "audio_classifier": ("audio",)}.get(kind, ("video", "audio", "text"))
    differences = []
    if config.modality_agnostic != expected.modality_agnostic:
        differences.append(f"modality_agnostic {config.modality_agnostic} (preset: {expected.modality_agnostic})")
    for tower in towers:
        ours, theirs = getattr(config, f"{tower}_config"), getattr(expected, f"{tower}_config")
        differences += [
            f"{tower}_config.{field} {getattr(ours, field)} (preset: {getattr(theirs, field)})"
            for field in TRANSFORMER_FIELDS
            if getattr(ours, field) != getattr(theirs, field)
        ]
    if kind in ("modality_specific", "modality_agnostic"):
        differences += [
            f"{field} {getattr(config, field)} (preset: {getattr(expected, field)})"
            for field in ("d_va", "d_vt")
            if getattr(config, field) != getattr(expected, field)
        ]
    if differences:
        raise ValueError(f"the checkpoint is not a {preset}: " + ", ".join(differences))


def vocabulary_tokenizer(vocab_file: str | Path, vocab_size: int, max_length: int) -> Any:
    """DMVR's `WordTokenizer` (the official data pipeline's) over the official vocabulary, as a fast tokenizer.

    The file has one `word` or `index word` per line (the line number is the index otherwise) and holds `<pad>`,
    `<bos>`, `<eos>` and `<unk>`, as DMVR requires. Captions are cut of ASCII punctuation (removed, not replaced),
    lower-cased and split on whitespace; unknown words map to `<unk>`, padding is `<pad>` (id 0, the official
    model's padding id). No BOS/EOS is added (DMVR's default).
    """
    from tokenizers import Regex, Tokenizer, normalizers, pre_tokenizers
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    vocab: dict[str, int] = {}
    indices: set[int] = set()
    for line_index, line in enumerate(Path(vocab_file).read_text(encoding="utf-8").splitlines()):
        parts = line.strip().split(" ")
        if len(parts) not in (1, 2):
            raise ValueError(f"vocab_file line {line_index} is malformed: {line!r}")
        index, word = (int(parts[0]), parts[1]) if len(parts) == 2 else (line_index, parts[0])
        if word in vocab or index in indices:
            raise ValueError(f"vocab_file repeats the word {word!r} or the index {index}")
        vocab[word] = index
        indices.add(index)
    missing = [token for token in ("<pad>", "<bos>", "<eos>", "<unk>") if token not in vocab]
    if missing or vocab["<pad>"] != 0 or len(vocab) != vocab_size or max(vocab.values()) != vocab_size - 1:
        raise ValueError(
            f"vocab_file must hold {vocab_size} words (the checkpoint's word embeddings) with ids 0..{vocab_size - 1}, "
            f"<pad> = 0, <bos>, <eos> and <unk>; got {len(vocab)} words, missing {missing}"
        )
    tokenizer = Tokenizer(WordLevel(vocab=vocab, unk_token="<unk>"))
    tokenizer.normalizer = normalizers.Sequence(
        [normalizers.Replace(Regex(r"[!-/:-@\[-`{-~]"), ""), normalizers.Lowercase()]
    )
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        pad_token="<pad>",
        unk_token="<unk>",
        bos_token="<bos>",
        eos_token="<eos>",
        model_max_length=max_length,
        padding_side="right",
        truncation_side="right",
    )


def build_processor(config: VattConfig, kind: str, vocab_file: str | Path | None) -> Any:
    """The official evaluation preprocessing at the model's sizes: frames resized to the image size (shorter side)
    and centre-cropped, in [-1, 1]; the waveform cropped or padded to the model's samples; the official vocabulary."""
    video, audio = config.video_config, config.audio_config
    size = video.image_size
    image_processor = VattVideoProcessor(
        num_frames=video.num_frames, size={"shortest_edge": size}, crop_size={"height": size, "width": size}
    )
    feature_extractor = VattFeatureExtractor(sampling_rate=audio.sampling_rate, num_samples=audio.num_samples)
    if kind == "video_classifier":
        return image_processor
    if kind == "audio_classifier":
        return feature_extractor
    if vocab_file is None:
        raise ValueError(
            "`vocab_file` is needed for a checkpoint with a text tower: its word ids are the official vocabulary's "
            "(in misc_data.tgz of the official README), in DMVR's WordTokenizer format"
        )
    text = config.text_config
    tokenizer = vocabulary_tokenizer(vocab_file, text.vocab_size, text.max_position_embeddings)
    return VattProcessor(image_processor=image_processor, feature_extractor=feature_extractor, tokenizer=tokenizer)


def _render_card(config: VattConfig, kind: str, checkpoint_name: str, model_id: str, note: str | None) -> Any:
    from hfvision.hub.card import render_model_card  # card rendering only; the model folder stays self-contained

    tags = {"video_classifier": "video-classification", "audio_classifier": "audio-classification"}
    description = (
        f"The authors' released VATT checkpoint `{checkpoint_name}`, converted to hfvision with "
        "`convert_vatt_original_to_hf.py`, which maps every tensor and refuses a checkpoint that does not map "
        "completely; on tiny models built with the official code the converted models reproduce the official "
        "embeddings and logits to 1e-5. The conversion runs no evaluation, so the Results table is empty; the "
        "official README and the paper report the numbers of each released model. The weights are the authors', "
        "released with the official code under the Apache-2.0 License."
    )
    if note:
        description = f"**{note}** {description}"
    return render_model_card(
        "vatt",
        model_id=model_id,
        eval_results=[],
        training_config={
            "converted_from": checkpoint_name,
            "official_code": OFFICIAL_CODE,
            "converter": "hfvision/models/vatt/convert_vatt_original_to_hf.py",
            "kind": kind,
        },
        datasets=[],
        pipeline_tag=tags.get(kind),
        training_data=(note and "none: random weights in the official format")
        or "HowTo100M + AudioSet (the authors' pretraining with the official code; not re-trained here)"
        + ("" if kind in ("modality_specific", "modality_agnostic") else ", then the release's fine-tuning data set"),
        modality_agnostic=config.modality_agnostic,
        architecture=f"`{model_class(kind).__name__}` (`model_type: vatt`), converted from the official checkpoint",
        converted_from=checkpoint_name,
        model_description=description,
        training_data_description="Converted weights: hfvision neither re-trained nor re-evaluated this checkpoint.",
        extra_deviations=[
            "**Converted checkpoint:** the data, tokenizer, clips, initialisation and optimisation items above "
            "describe hfvision's own training script, not these weights, which are the authors' (word ids from the "
            "official vocabulary)."
        ],
    )


def convert_vatt_checkpoint(
    checkpoint_path: str | Path,
    output_dir: str | Path,
    preset: str | None = None,
    config: VattConfig | None = None,
    vocab_file: str | Path | None = None,
    labels_file: str | Path | None = None,
    push_to_hub: str | None = None,
    card_note: str | None = None,
) -> PreTrainedModel:
    """Read, convert and check, then write config + safetensors + processor + model card (and publish).

    Args:
        checkpoint_path: the official checkpoint prefix (`.../ckpt-500000`) or its folder.
        output_dir: where `save_pretrained` writes; nothing is written when a check fails.
        preset: a `VattConfig` preset the checkpoint must match (`vatt-bbs`, `vatt-mbs`, `vatt-lbs`,
            `vatt-ma-medium`); its heads are used.
        config: an explicit config instead of one read from the shapes.
        vocab_file: the official word vocabulary (needed with a text tower).
        labels_file: class names of a classifier, one per line in the classifier's order.
        push_to_hub: publish the folder to this repo id through `hfvision.hub.publish`.
        card_note: a sentence put first in the model card (e.g. that the weights are random).

    Returns:
        The converted model, in eval mode.
    """
    variables = model_variables(load_tf_checkpoint(checkpoint_path))
    kind = checkpoint_kind(variables)
    if config is None:
        head_dim = OFFICIAL_HEAD_DIM
        if preset is not None:
            expected = VattConfig.from_preset(preset).video_config
            head_dim = expected.hidden_size // expected.num_attention_heads
        config = config_from_variables(variables, head_dim)
    if labels_file is not None:
        names = [line.strip() for line in Path(labels_file).read_text(encoding="utf-8").splitlines() if line.strip()]
        if kind not in ("video_classifier", "audio_classifier") or len(names) != config.num_labels:
            raise ValueError(f"labels_file has {len(names)} names; the checkpoint's classifier has {config.num_labels}")
        config.id2label, config.label2id = dict(enumerate(names)), {name: i for i, name in enumerate(names)}
    if preset is not None:
        check_preset(config, preset, kind)
    config, state_dict, kind = convert_variables(variables, config)
    processor = build_processor(config, kind, vocab_file)
    if push_to_hub is not None:
        from hfvision.hub.publish import check_repo_id

        check_repo_id(push_to_hub)
    model = model_class(kind)(config)
    model.load_state_dict(state_dict, strict=True)
    model.eval()
    # everything is checked: write
    output_dir = Path(output_dir)
    model.save_pretrained(output_dir)
    processor.save_pretrained(output_dir)
    name = Path(checkpoint_path).name
    card = _render_card(config, kind, name, push_to_hub or f"local/{output_dir.resolve().name}", card_note)
    card.save(output_dir / "README.md")
    if push_to_hub is not None:
        from hfvision.hub.publish import publish  # the converter runs with hfvision installed; the model code does not

        publish(output_dir, push_to_hub, commit_message=f"Convert {name}")
    return model


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint_path", required=True, help="official checkpoint prefix (ckpt-N) or its folder")
    parser.add_argument("--output_dir", required=True, help="folder for the converted checkpoint")
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--preset",
        choices=["vatt-bbs", "vatt-mbs", "vatt-lbs", "vatt-ma-medium"],
        help="architecture the checkpoint must have (default: read from the shapes)",
    )
    group.add_argument("--config_file", help="a VattConfig config.json instead of a preset")
    parser.add_argument("--vocab_file", help="the official word vocabulary, one word per line (text tower)")
    parser.add_argument("--labels_file", help="class names of a classifier, one per line")
    parser.add_argument("--push_to_hub", metavar="REPO_ID", help="publish the folder to this Hub repo")
    args = parser.parse_args(argv)
    config = None
    if args.config_file:
        config = VattConfig.from_dict(json.loads(Path(args.config_file).read_text(encoding="utf-8")))
    try:
        convert_vatt_checkpoint(
            args.checkpoint_path,
            args.output_dir,
            preset=args.preset,
            config=config,
            vocab_file=args.vocab_file,
            labels_file=args.labels_file,
            push_to_hub=args.push_to_hub,
        )
    except (ValueError, FileNotFoundError) as error:
        parser.exit(1, f"error: {error}\n")
    print(
        f"Converted {args.checkpoint_path} -> {args.output_dir}"
        + (f" -> {args.push_to_hub}" if args.push_to_hub else "")
    )


if __name__ == "__main__":
    main()
