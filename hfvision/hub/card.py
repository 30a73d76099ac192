"""Model cards from the Jinja templates in `model_cards/<method>.md`.

Two entry points:

- `render_model_card` fills a method's template with `huggingface_hub.ModelCard.from_template`: the YAML front matter
  (license, library, pipeline tag, tags, base model, datasets and a `model-index` built from `EvalResult`s) comes
  from `ModelCardData`, the body from the template. Eval values are forwarded from the evaluation run as given; a
  missing or non-finite value is an error, never a placeholder.
- `card_from_checkpoint` / `write_model_card` build every argument of `render_model_card` from a checkpoint folder
  alone: the method from `config.json`'s `model_type`, the pipeline tag from what the saved head does
  (`config.architectures`), the results (with the baseline the same run measured beside each headline number), the
  training data and hyperparameters from `eval_results.json` (the format of `hfvision.training.save_final`, or
  Trainer's flat metrics with the run's arguments in `training_config.json`). Every training script's final folder
  gets its card this way, and `hfvision card CHECKPOINT_DIR` re-renders one.

Data sets are described the same way on every card (`DATASETS`): a data set with a real Hub id is listed in the
`datasets` metadata and is the `model-index` dataset type; a local or generated one is not listed as a Hub data set,
keeps one fixed `hfvision/<name>` type in the `model-index`, and the card says how it was made. Local paths never
reach a card: absolute paths in the training configuration are shortened to their last part.

Where the templates are found, in order:
1. `hfvision/model_cards/<method>.md` inside the installed package (a wheel built with the repository's top-level
   `model_cards/` mapped onto the `hfvision.model_cards` package by `[tool.setuptools.package-dir]`);
2. `<repository>/model_cards/<method>.md` next to the `hfvision/` package folder (a source checkout or an editable
   install), the canonical copy that is edited.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import math
import numbers
import os
import re
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from huggingface_hub import EvalResult, ModelCard, ModelCardData

__all__ = [
    "ARCHITECTURE_PIPELINE_TAGS",
    "DATASETS",
    "METHOD_CARD_METADATA",
    "MODEL_TYPE_METHODS",
    "TRAINER_HYPERPARAMETERS",
    "TRAINING_CONFIG_FILE",
    "DatasetInfo",
    "card_from_checkpoint",
    "find_card_template",
    "render_model_card",
    "write_model_card",
]

# Hub metadata per method: the pipeline a checkpoint serves by default and its tags. Methods without an entry get
# generic tags. `card_from_checkpoint` refines the pipeline tag from the saved head (`ARCHITECTURE_PIPELINE_TAGS`).
METHOD_CARD_METADATA: dict[str, dict[str, Any]] = {
    "pyramidclip": {
        "pipeline_tag": "zero-shot-image-classification",
        "tags": ["vision", "pyramidclip", "clip", "hfvision"],
    },
    "lps": {
        "pipeline_tag": "image-classification",
        "tags": ["vision", "lps", "shift-invariance", "polyphase-sampling", "resnet", "hfvision"],
    },
    "mcmae": {
        "pipeline_tag": "image-classification",
        "tags": ["vision", "mcmae", "convmae", "masked-image-modeling", "hfvision"],
    },
    "autolink": {
        "pipeline_tag": "keypoint-detection",
        "tags": ["vision", "autolink", "keypoint-detection", "self-supervised", "skeleton", "hfvision"],
    },
    "trap_replace": {
        "pipeline_tag": "image-classification",
        "tags": ["vision", "trap-and-replace", "backdoor-defense", "wide-resnet", "hfvision"],
    },
    # one template serves the teacher ViT and the explainer repo (not a classifier), so no pipeline tag is claimed
    "scaffold": {"tags": ["vision", "scaffold", "smat", "explainability", "vit", "hfvision"]},
    # the sample-generation pipeline is custom (remote code); the Hub has no matching task tag, so none is claimed
    "score_sde": {"tags": ["score-based-generative-model", "sde", "manifold-hypothesis", "hfvision"]},
    # a pretrained VattModel embeds clips, soundtracks and captions; no Hub pipeline task serves that, so none
    "vatt": {"tags": ["video", "audio", "vatt", "multimodal", "self-supervised", "contrastive", "hfvision"]},
}

# `config.json` model_type -> the method (template) that describes it.
MODEL_TYPE_METHODS: dict[str, str] = {
    "pyramidclip": "pyramidclip",
    "mcmae": "mcmae",
    "lps_resnet": "lps",
    "autolink": "autolink",
    "trap_replace": "trap_replace",
    "scaffold_vit": "scaffold",
    "scaffold_attention_explainer": "scaffold",
    "score_sde": "score_sde",
    "vatt": "vatt",
}

# What a saved head does, as the Hub's pipeline tag (None: no Hub task fits; the card claims none). A pretraining
# checkpoint whose classification head would be random is a feature extractor, never an image classifier.
ARCHITECTURE_PIPELINE_TAGS: dict[str, str | None] = {
    "PyramidClipModel": "zero-shot-image-classification",
    "PyramidClipForImageClassification": "image-classification",
    "McMaeModel": "image-feature-extraction",
    "McMaeForPreTraining": "image-feature-extraction",
    "McMaeForImageClassification": "image-classification",
    "LpsResNetModel": "image-feature-extraction",
    "LpsResNetForImageClassification": "image-classification",
    "LpsForSemanticSegmentation": "image-segmentation",
    "AutoLinkModel": "keypoint-detection",
    "AutoLinkForSelfSupervisedKeypoints": "keypoint-detection",
    "TrapReplaceModel": "image-feature-extraction",
    "TrapReplaceForImageClassification": "image-classification",
    "ScaffoldVitModel": "image-feature-extraction",
    "ScaffoldVitForImageClassification": "image-classification",
    "AttentionExplainer": None,
    "ScoreSdeModel": None,  # points; a U-Net on images is `unconditional-image-generation` (see `_pipeline_tag`)
    "VattModel": None,
    "VattForPreTraining": None,
    "VattForVideoClassification": "video-classification",
    "VattForAudioClassification": "audio-classification",
}

# Keys of a training configuration that say where a run lived, not how it trained: left out of every card.
_LOCAL_ONLY_KEYS = frozenset(
    {
        "output_dir",
        "logging_dir",
        "resume_from_checkpoint",
        "overwrite_output_dir",
        "stop_after_step",
        "stop_after_epoch",
        "debug_log_keys",
        "push_to_hub",
        "hub_token",
        "report_to",
    }
)
# Trainer arguments worth a card (the rest are plumbing: logging, saving, devices).
TRAINER_HYPERPARAMETERS = (
    "learning_rate",
    "lr_scheduler_type",
    "warmup_steps",
    "weight_decay",
    "adam_beta1",
    "adam_beta2",
    "adam_epsilon",
    "optim",
    "max_grad_norm",
    "num_train_epochs",
    "max_steps",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "label_smoothing_factor",
    "seed",
    "fp16",
    "bf16",
)
TRAINING_CONFIG_FILE = "training_config.json"
EVAL_RESULTS_FILE = "eval_results.json"

_REQUIRED_EVAL_KEYS = ("task_type", "dataset_type", "dataset_name", "metric_type", "metric_value")
_EVAL_KEYS = {field.name for field in dataclasses.fields(EvalResult)}
_HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*")
# The value given to `pipeline_tag` to take the method's default from `METHOD_CARD_METADATA`.
METHOD_DEFAULT = "method-default"
# The picture of a run's logged curves that `hfvision.training.save_final` draws into the checkpoint folder.
TRAINING_CURVES = "training_curves.png"


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """How every card names one data set.

    Attributes:
        name: display name, e.g. `"Fashion-MNIST"`.
        type: the `model-index` dataset type: the Hub id when there is one, else `"hfvision/<name>"`.
        description: one sentence on what it is and where it comes from.
        hub_id: the real Hub id, listed in the card's `datasets` metadata; None for local / generated data.
    """

    name: str
    type: str
    description: str
    hub_id: str | None = None


DATASETS: dict[str, DatasetInfo] = {
    "fashion_mnist": DatasetInfo(
        "Fashion-MNIST",
        "zalando-datasets/fashion_mnist",
        "Zalando's 28x28 grayscale clothing images in 10 classes (60,000 train / 10,000 test), read offline from "
        "Debian's `dataset-fashion-mnist` package",
        "zalando-datasets/fashion_mnist",
    ),
    "synthetic_scenes": DatasetInfo(
        "Synthetic scenes",
        "hfvision/synthetic-scenes",
        "seeded scenes of coloured shapes with template captions, generated by `hfvision.data.build_synthetic_scenes` "
        "(local, not on the Hub)",
    ),
    "tuxpaint": DatasetInfo(
        "TuxPaint stamps",
        "hfvision/tuxpaint-stamps",
        "renders of the cut-out pictures of Debian's `tuxpaint-stamps-default` package (GPL-2) with their English "
        "captions, written by `hfvision.data.build_tuxpaint` (local, not on the Hub)",
    ),
    "synthetic_colours": DatasetInfo(
        "Synthetic colours",
        "hfvision/synthetic-colours",
        "seeded colour images whose class is their dominant colour, generated by "
        "`training/finetune_image_classification.py --dataset synthetic` (local, not on the Hub)",
    ),
    "stick_figures": DatasetInfo(
        "Stick figures",
        "hfvision/stick-figures",
        "seeded stick figures with ground-truth joints and bones, generated by `hfvision.data.build_stick_figures` "
        "(local, not on the Hub; ground truth is used for evaluation only)",
    ),
    "av_clips": DatasetInfo(
        "Synthetic video-audio-text clips",
        "hfvision/av-clips",
        "seeded clips of a coloured shape moving on noise, with a soundtrack that follows its shape and motion and a "
        "template caption, generated by `hfvision.data.build_av_clips` (local, not on the Hub)",
    ),
    "manifold_points": DatasetInfo(
        "Manifold points",
        "hfvision/manifold-points",
        "points of a low-dimensional manifold isometrically embedded in R^d, generated by "
        "`hfvision.data.build_manifold_points` (local, not on the Hub)",
    ),
    "digits": DatasetInfo(
        "scikit-learn digits",
        "hfvision/sklearn-digits",
        "scikit-learn's 1,797 8x8 handwritten digits (`sklearn.datasets.load_digits`), split into train / valid / "
        "test by `hfvision.data.build_digits` (not on the Hub as such)",
    ),
}


# `build_info.json` "generator" of a builder's folder -> its entry in DATASETS.
_GENERATOR_DATASETS = {
    "hfvision.data.synthetic_scenes.SyntheticScenes": "synthetic_scenes",
    "hfvision.data.stick_figures.StickFigures": "stick_figures",
    "hfvision.data.tuxpaint.TuxpaintStamps": "tuxpaint",
}


def find_card_template(method: str) -> Path:
    """Path of the Jinja model-card template of a method.

    Args:
        method: the method's template name, e.g. `"pyramidclip"` for `model_cards/pyramidclip.md`.

    Returns:
        The template's path: the packaged copy if the installed package carries one, else the source checkout's.

    Raises:
        FileNotFoundError: if neither location holds `<method>.md`.
    """
    file_name = f"{method}.md"
    candidates = []
    try:
        packaged = resources.files("hfvision").joinpath("model_cards", file_name)
        if isinstance(packaged, Path):  # a plain directory install; zip imports have no path to hand to Jinja
            candidates.append(packaged)
    except ModuleNotFoundError:
        pass
    candidates.append(Path(__file__).resolve().parents[2] / "model_cards" / file_name)
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    searched = ", ".join(str(candidate) for candidate in candidates)
    raise FileNotFoundError(f"no model-card template for method {method!r}; looked for {searched}")


def _eval_result(result: dict[str, Any]) -> EvalResult:
    """Build an `EvalResult` from a result dict, rejecting unknown keys and missing or non-finite values."""
    unknown = sorted(set(result) - _EVAL_KEYS)
    if unknown:
        raise ValueError(f"unknown eval result keys {unknown}; expected keys among {sorted(_EVAL_KEYS)}")
    missing = [key for key in _REQUIRED_EVAL_KEYS if result.get(key) is None]
    if missing:
        raise ValueError(f"eval result {result} lacks {missing}: pass the values measured by the evaluation run")
    value = result["metric_value"]
    if hasattr(value, "item") and callable(value.item):  # numpy / torch scalars -> Python numbers for YAML
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"eval result {result} has metric_value {value!r}; expected a finite number from the run")
    return EvalResult(**{**result, "metric_value": value})


def _to_plain(value: Any) -> Any:
    """Turn a training config into YAML-safe builtins (dicts, lists, str, numbers, bools, None)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    if isinstance(value, dict):
        return {str(key): _to_plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        items = sorted(value, key=str) if isinstance(value, (set, frozenset)) else value
        return [_to_plain(item) for item in items]
    if isinstance(value, enum.Enum):
        return _to_plain(value.value)
    if callable(getattr(value, "tolist", None)):  # numpy / torch arrays and scalars
        return _to_plain(value.tolist())
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    return str(value)  # paths, dtypes, devices


def _format_value(value: float) -> str:
    if isinstance(value, float) and (value == 0 or 1e-3 <= abs(value) < 1e5):
        return f"{value:.4f}"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _results_table(results: list[EvalResult], baselines: list[str | None]) -> str:
    """The card's results table; a Baseline column when the run measured a baseline beside any number."""
    if not results:
        return "No evaluation results were recorded with this checkpoint."
    with_baseline = any(baselines)
    header = "| Task | Dataset | Split | Metric | Value |" + (" Baseline |" if with_baseline else "")
    lines = [header, "|---|---|---|---|---|" + ("---|" if with_baseline else "")]
    for result, baseline in zip(results, baselines, strict=True):
        cells = [
            result.task_name or result.task_type,
            result.dataset_name,
            result.dataset_split or "-",
            result.metric_name or result.metric_type,
            _format_value(result.metric_value),
        ]
        if with_baseline:
            cells.append(baseline or "-")
        lines.append("| " + " | ".join(str(cell) for cell in cells) + " |")
    return "\n".join(lines)


def render_model_card(
    method: str,
    *,
    model_id: str,
    eval_results: list[dict[str, Any]],
    training_config: dict[str, Any],
    datasets: list[str],
    template_path: str | Path | None = None,
    pipeline_tag: str | None = METHOD_DEFAULT,
    base_model: str | None = None,
    baselines: list[str | None] | None = None,
    training_data: str | None = None,
    license: str = "apache-2.0",
    **template_vars: Any,
) -> ModelCard:
    """Render a method's model card with Hub metadata and the measured eval results.

    Args:
        method: template name under `model_cards/`, e.g. `"pyramidclip"`; also picks the tags (and, by default,
            the pipeline tag) from `METHOD_CARD_METADATA`.
        model_id: the Hub repo id the card describes (`"org/name"`); its last part names the `model-index` entry.
        eval_results: one dict per measured number, with the keys of `huggingface_hub.EvalResult`: required
            `task_type`, `dataset_type`, `dataset_name`, `metric_type`, `metric_value`; optional `task_name`,
            `dataset_split`, `dataset_config`, `metric_name`, `metric_config`, ... Values are forwarded unchanged
            (numpy/torch scalars become Python numbers).
        training_config: the run's hyperparameters, rendered as a YAML block.
        datasets: Hub ids of the training datasets, for the `datasets` metadata.
        template_path: a Jinja template to use instead of `find_card_template(method)`.
        pipeline_tag: the Hub pipeline tag; `METHOD_DEFAULT` takes the method's, None claims none.
        base_model: the Hub id of the checkpoint this one was fine-tuned from, for the `base_model` metadata.
        baselines: one entry per eval result: the baseline the same run measured beside it (text), or None.
        training_data: the card's training-data sentence (markdown); default: the `datasets` ids.
        license: the weights' license (a Hub license id): hfvision's Apache-2.0 for weights trained here, the
            release's own for converted weights (e.g. `"mit"`, or `"unknown"` when the release states none).
        **template_vars: extra template variables (for `pyramidclip.md`: `model_description`, `architecture`,
            `softening_alpha`, `training_data_description`, `extra_deviations`, `model_name`).

    Returns:
        The rendered `huggingface_hub.ModelCard`; `str(card)` is the README.md text.

    Raises:
        ValueError: if an eval result lacks a required key or value, has an unknown key, or its value is not a
            finite number; if `baselines` does not have one entry per result.
        FileNotFoundError: if the method has no template.
    """
    results = [_eval_result(result) for result in eval_results]
    baselines = list(baselines) if baselines is not None else [None] * len(results)
    if len(baselines) != len(results):
        raise ValueError(f"baselines has {len(baselines)} entries for {len(results)} eval results; expected one each")
    model_name = template_vars.pop("model_name", model_id.rstrip("/").split("/")[-1])
    metadata = METHOD_CARD_METADATA.get(method, {"tags": ["vision", method, "hfvision"]})
    if pipeline_tag == METHOD_DEFAULT:
        pipeline_tag = metadata.get("pipeline_tag")
    card_data = ModelCardData(
        language="en",
        license=license,
        library_name="transformers",
        pipeline_tag=pipeline_tag,
        tags=list(metadata["tags"]),
        base_model=base_model,
        datasets=list(datasets) or None,
        metrics=sorted({result.metric_type for result in results}) or None,
        model_name=model_name,
        eval_results=results or None,
    )
    training_config_yaml = yaml.safe_dump(
        _to_plain(training_config), sort_keys=False, default_flow_style=False, allow_unicode=True
    ).rstrip()
    if training_data is None:
        training_data = ", ".join(f"`{dataset}`" for dataset in datasets) or "[More Information Needed]"
    path = Path(template_path) if template_path is not None else find_card_template(method)
    return ModelCard.from_template(
        card_data,
        template_path=str(path),
        model_id=model_id,
        model_name=model_name,
        eval_results=results,
        results_table=_results_table(results, baselines),
        datasets=list(datasets),
        training_data=training_data,
        training_config_yaml=training_config_yaml,
        pipeline_tag=pipeline_tag,
        base_model=base_model,
        **template_vars,
    )


# --- cards from a checkpoint folder ------------------------------------------------------------------------------


@dataclasses.dataclass
class _Run:
    """What a checkpoint folder says about the run that produced it."""

    checkpoint: Path
    model_config: dict[str, Any]  # config.json
    metrics: dict[str, Any]  # eval_results.json's metrics (Trainer's flat dict, or save_final's "metrics")
    config: dict[str, Any]  # the run's arguments
    trainer: bool  # written by Trainer (flat `eval_*` metrics)

    @property
    def architecture(self) -> str:
        return (self.model_config.get("architectures") or [""])[0]

    def arg(self, key: str, default: Any = None) -> Any:
        value = self.config.get(key)
        return default if value is None else value


@dataclasses.dataclass
class _CardSpec:
    """A method's reading of a run: its data set, its results with their baselines, extra template variables."""

    dataset: DatasetInfo
    data_details: str = ""
    results: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    baselines: list[str | None] = dataclasses.field(default_factory=list)
    template_vars: dict[str, Any] = dataclasses.field(default_factory=dict)

    def add(
        self,
        metrics: dict[str, Any],
        key: str,
        *,
        task_type: str,
        task_name: str,
        metric_type: str,
        metric_name: str,
        split: str = "eval",
        metric_config: str | None = None,
        baseline: str | None = None,
    ) -> None:
        """One result row from `metrics[key]` (nothing when the run did not measure it)."""
        value = metrics.get(key)
        if not isinstance(value, numbers.Real) or isinstance(value, bool) or not math.isfinite(value):
            return
        row = {
            "task_type": task_type,
            "task_name": task_name,
            "dataset_type": self.dataset.type,
            "dataset_name": self.dataset.name,
            "dataset_split": split,
            "metric_type": metric_type,
            "metric_name": metric_name,
            "metric_value": value,
        }
        if metric_config is not None:
            row["metric_config"] = metric_config
        self.results.append(row)
        self.baselines.append(baseline)


def _local_dataset(source: str) -> DatasetInfo:
    """A data set given by `--train_data`: its Hub id; a folder written by one of hfvision's builders (named by its
    `build_info.json`); else a local folder described by its name."""
    if _is_hub_id(source):
        return DatasetInfo(source.split("/")[-1], source, f"the Hub data set `{source}`", source)
    info_path = Path(source) / "build_info.json"
    if info_path.is_file():
        generator = json.loads(info_path.read_text(encoding="utf-8")).get("generator")
        if generator in _GENERATOR_DATASETS:
            return DATASETS[_GENERATOR_DATASETS[generator]]
    name = Path(source.rstrip("/")).name or "data"
    return DatasetInfo(name, f"hfvision/{name}", f"a local data folder `{name}` (not on the Hub)")


def _is_hub_id(value: Any) -> bool:
    return isinstance(value, str) and bool(_HUB_ID.fullmatch(value)) and not os.path.exists(value)


def _counts(run: _Run, train_key: str, eval_key: str, unit: str) -> str:
    train, held_out = run.arg(train_key), run.arg(eval_key)
    parts = [f"{train:,} training {unit}" if train else "", f"{held_out:,} held out" if held_out else ""]
    return ", ".join(part for part in parts if part)


def _generated_or_local(run: _Run, flag: str, dataset: str, prefix: str, unit: str) -> _CardSpec:
    """The card spec of a run on hfvision's generated data (`--<flag>`, sizes `--<prefix>_num_train` / `_num_eval`)
    or, without the flag, on the local data of `--train_data`."""
    if run.arg(flag):
        return _CardSpec(DATASETS[dataset], _counts(run, f"{prefix}_num_train", f"{prefix}_num_eval", unit))
    return _CardSpec(_local_dataset(run.arg("train_data", "data")))


def _recall_rows(spec: _CardSpec, metrics: dict[str, Any], pairs: list[tuple[str, str]], ks: tuple[int, ...]) -> None:
    """Recall@k rows of retrieval directions (no baseline: the runs measure none, and with several matching items per
    query the chance level is not k / N)."""
    for direction, task_name in pairs:
        for k in ks:
            spec.add(
                metrics,
                f"eval/{direction}_recall@{k}",
                task_type=f"{direction.replace('_to_', '-to-')}-retrieval",
                task_name=task_name,
                metric_type="recall",
                metric_name=f"Recall@{k}",
                metric_config=f"R@{k}",
            )


def _pyramidclip(run: _Run) -> _CardSpec:
    metrics = run.metrics
    if run.arg("synthetic"):
        dataset = DATASETS["synthetic_scenes"]
        details = _counts(run, "synthetic_num_train", "synthetic_num_eval", "scenes")
    else:
        dataset = _local_dataset(run.arg("train_data", "data"))
        details = ""
    spec = _CardSpec(dataset, details)
    for k in (1, 5):
        spec.add(
            metrics,
            f"eval/zero_shot_top{k}_accuracy",
            task_type="zero-shot-image-classification",
            task_name="Zero-shot image classification",
            metric_type="accuracy",
            metric_name=f"Top-{k} accuracy",
            metric_config=f"top{k}",
        )
    _recall_rows(
        spec,
        metrics,
        [("image_to_text", "Image-to-text retrieval"), ("text_to_image", "Text-to-image retrieval")],
        (1, 5),
    )
    return spec


def _mcmae(run: _Run) -> _CardSpec:
    spec = _generated_or_local(run, "fashion_mnist", "fashion_mnist", "fashion_mnist", "images")
    spec.add(
        run.metrics,
        "eval/reconstruction_loss",
        task_type="masked-image-modeling",
        task_name="Masked image modeling",
        metric_type="loss",
        metric_name="Masked-patch MSE"
        + (" (per-patch normalised pixels)" if run.model_config.get("norm_pix_loss") else ""),
        split="test" if run.arg("fashion_mnist") else "eval",
    )
    if (run.checkpoint / "reconstructions.png").is_file():
        spec.template_vars["reconstruction_image"] = "reconstructions.png"
    spec.template_vars["mask_ratio"] = run.model_config.get("mask_ratio")
    return spec


def _autolink(run: _Run) -> _CardSpec:
    spec = _generated_or_local(run, "stick_figures", "stick_figures", "stick_figures", "figures")
    metrics = run.metrics
    mean_pose = metrics.get("eval/mean_pose_nme")
    spec.add(
        metrics,
        "eval/keypoint_nme",
        task_type="keypoint-detection",
        task_name="Unsupervised keypoints (linear regression)",
        metric_type="nme",
        metric_name="Regressed keypoint error (NME, box diagonal)",
        baseline=f"mean pose {mean_pose:.4f}" if isinstance(mean_pose, float) else None,
    )
    for key, metric_type, name in (
        ("edge_precision", "precision", "Strongest-edge precision vs true bones (Hungarian)"),
        ("nearest_joint_bone_recall", "recall", "True bones among the strongest edges (nearest joint)"),
    ):
        spec.add(
            metrics,
            f"eval/{key}",
            task_type="keypoint-detection",
            task_name="Skeleton recovery",
            metric_type=metric_type,
            metric_name=name,
        )
    config = run.model_config
    spec.template_vars.update(
        num_keypoints=config.get("num_keypoints"),
        edge_thickness=config.get("edge_thickness"),
        graph_lr_scale=config.get("graph_lr_scale"),
        perceptual_loss=config.get("perceptual_loss"),
    )
    if (run.checkpoint / "keypoints.png").is_file():
        spec.template_vars["keypoints_image"] = "keypoints.png"
    return spec


def _vatt(run: _Run) -> _CardSpec:
    spec = _generated_or_local(run, "synthetic", "av_clips", "synthetic", "clips")
    pairs = [
        ("video_to_text", "Video-to-text retrieval"),
        ("text_to_video", "Text-to-video retrieval"),
        ("video_to_audio", "Video-to-audio retrieval"),
        ("audio_to_video", "Audio-to-video retrieval"),
    ]
    _recall_rows(spec, run.metrics, pairs, (1, 5, 10))
    if (run.checkpoint / "retrieval_examples.png").is_file():
        spec.template_vars["examples_image"] = "retrieval_examples.png"
    spec.template_vars["modality_agnostic"] = str(run.arg("model_preset", "")).startswith("vatt-ma")
    return spec


def _trap_replace(run: _Run) -> _CardSpec:
    trigger, ratio = run.arg("trigger", "badnet_grid"), run.arg("poison_ratio", 0.1)
    if run.arg("dataset") == "fashion_mnist":
        base = DATASETS["fashion_mnist"]
        dataset = dataclasses.replace(base, name=f"Fashion-MNIST 32x32 ({trigger}, {ratio:.0%} poisoned)")
        details = (
            f"{run.arg('num_train'):,} training images zero-padded to 32x32, {ratio:.0%} of them triggered with "
            f"`{trigger}` and relabelled to class {run.arg('target_label', 0)} by `hfvision.data.backdoor`; the last "
            f"{run.arg('holdout_ratio', 0.05):.0%} form the clean holdout of stage 2"
        )
    else:
        dataset = DatasetInfo(
            f"Synthetic stripes ({trigger}, {ratio:.0%} poisoned)",
            "hfvision/synthetic-stripes",
            "seeded stripe images generated by `hfvision.data.backdoor` for tests (local, not on the Hub)",
        )
        details = ""
    spec = _CardSpec(dataset, details)
    # stage 2 (or the fine-tuning control) starts from the stage-1 run: its numbers are the undefended baseline
    source = Path(str(run.arg("model_name_or_path", "")))
    trap_metrics: dict[str, Any] = {}
    for candidate in (source / EVAL_RESULTS_FILE, source.parent / EVAL_RESULTS_FILE):
        if run.arg("stage") != "trap" and run.arg("model_name_or_path") and candidate.is_file():
            trap_metrics = json.loads(candidate.read_text(encoding="utf-8")).get("metrics", {})
            break

    def trap_baseline(key: str) -> str | None:
        value = trap_metrics.get(key)
        return f"trap stage (undefended) {value:.4f}" if isinstance(value, float) else None

    spec.add(
        run.metrics,
        "eval/clean_accuracy",
        task_type="image-classification",
        task_name=f"Image classification under a {trigger} backdoor",
        metric_type="clean_accuracy",
        metric_name="clean accuracy",
        split="test",
        baseline=trap_baseline("eval/clean_accuracy"),
    )
    spec.add(
        run.metrics,
        "eval/attack_success_rate",
        task_type="image-classification",
        task_name=f"Image classification under a {trigger} backdoor",
        metric_type="attack_success_rate",
        metric_name="attack success rate",
        split="test (triggered, non-target)",
        baseline=trap_baseline("eval/attack_success_rate"),
    )
    spec.template_vars.update(stage=run.arg("stage", "trap"), trigger=trigger)
    return spec


def _score_sde(run: _Run) -> _CardSpec:
    metrics = run.metrics
    if run.arg("data_type") == "images":
        source = _local_dataset(run.arg("train_data", "images"))
        channels, size = run.model_config.get("num_channels"), run.model_config.get("image_size")
        dataset = dataclasses.replace(source, name=f"{source.name} images, {channels} x {size}^2")
        spec = _CardSpec(dataset)
        spec.template_vars["image_data"] = True
    else:
        manifold = run.arg("manifold", "circle")
        num_train = run.arg("manifold_num_train")
        points = f"{num_train} training points" if num_train else "fresh samples"
        dataset = dataclasses.replace(
            DATASETS["manifold_points"], name=f"{manifold} in R^{run.arg('manifold_ambient_dim', 10)}, {points}"
        )
        spec = _CardSpec(dataset)
    spec.template_vars["data_description"] = dataset.name
    chance = metrics.get("eval/chance_fraction_within_delta")
    rows = [
        ("distance_median", "Support found (Thm: finite error energy -> output ~ data law)",
         "Median distance of samples to the manifold", None),
        ("within_0.03", "Support found (Thm: finite error energy -> output ~ data law)",
         "Fraction of samples within 3e-2 of the manifold", None),
        ("angle_chi2", "Weights (horizon T / start law change weights, not support)",
         "Chi-square of the angle histogram vs uniform (15 dof)", "uniform angles: 15 (expected value)"),
        ("fraction_within_delta", "Memorisation (score close to the empirical score -> training points)",
         "Fraction of samples within delta of a training point",
         f"fresh points of the law (chance) {chance:.4f}" if isinstance(chance, float) else None),
        ("error_energy_vs_empirical", "Memorisation vs generalisation (Girsanov energy)",
         "Score-error energy against the empirical score down to sigma_min", None),
        ("dsm_loss", "Denoising score matching", "Held-out DSM loss (fixed noise)", None),
    ]  # fmt: skip
    for key, task_name, metric_name, baseline in rows:
        spec.add(
            metrics,
            f"eval/{key}",
            task_type="unconditional-sample-generation",
            task_name=task_name,
            metric_type=key,
            metric_name=metric_name,
            baseline=baseline,
        )
    if (run.checkpoint / "samples.png").is_file():
        spec.template_vars["samples_image"] = "samples.png"
    return spec


def _scaffold(run: _Run) -> _CardSpec:
    spec = _CardSpec(DATASETS["digits"], f"{run.arg('num_student_examples')} training images for the student")
    metrics = run.metrics
    spec.add(
        metrics,
        "teacher_test_accuracy",
        task_type="image-classification",
        task_name="Image classification (teacher)",
        metric_type="accuracy",
        metric_name="accuracy",
        split="test",
    )
    explainer = run.arg("teacher_explainer", "smat")
    baselines = [name for name in str(run.arg("baselines", "")).split(",") if name and name != explainer]
    measured = ", ".join(
        f"{name} {metrics[name]['test_simulability']:.4f}"
        for name in baselines
        if isinstance(metrics.get(name), dict) and "test_simulability" in metrics[name]
    )
    for name in [explainer, *baselines]:
        if isinstance(metrics.get(name), dict):
            spec.add(
                metrics[name],
                "test_simulability",
                task_type="image-classification",
                task_name=f"Student simulability ({name} explainer)",
                metric_type="simulability",
                metric_name=f"simulability ({name})",
                split="test",
                baseline=measured or None if name == explainer else None,
            )
    model_type = run.model_config.get("model_type")
    spec.template_vars.update(architecture=run.architecture, model_type=model_type)
    if model_type == "scaffold_attention_explainer":
        spec.template_vars["head_weights"] = metrics.get("teacher_head_weights")
    return spec


_METHOD_SPECS: dict[str, Callable[[_Run], _CardSpec]] = {
    "pyramidclip": _pyramidclip,
    "mcmae": _mcmae,
    "autolink": _autolink,
    "vatt": _vatt,
    "trap_replace": _trap_replace,
    "score_sde": _score_sde,
    "scaffold": _scaffold,
}


def _trainer_classification(run: _Run) -> _CardSpec:
    """A `finetune_image_classification.py` run (Trainer): accuracy after training beside the same model before."""
    name = run.arg("dataset", "fashion_mnist")
    if name in ("fashion_mnist", "synthetic"):
        dataset = DATASETS["fashion_mnist" if name == "fashion_mnist" else "synthetic_colours"]
    else:
        dataset = _local_dataset(name)
    details = ", ".join(
        part
        for part in (
            f"{run.arg('max_train_samples'):,} training images" if run.arg("max_train_samples") else "",
            f"{run.arg('max_eval_samples'):,} held out" if run.arg("max_eval_samples") else "",
        )
        if part
    )
    spec = _CardSpec(dataset, details)
    before = "zero-shot head" if run.arg("zero_shot_init") else "before fine-tuning"
    split = "eval" if name == "synthetic" else run.arg("eval_split", "test")
    for k in (1, 5):
        initial = run.metrics.get(f"eval_init_top{k}_accuracy")
        spec.add(
            run.metrics,
            f"eval_top{k}_accuracy",
            task_type="image-classification",
            task_name="Image classification",
            metric_type="accuracy",
            metric_name=f"Top-{k} accuracy",
            metric_config=f"top{k}",
            split=split,
            baseline=f"{before} {initial:.4f}" if isinstance(initial, float) else None,
        )
    return spec


def _portable_config(config: dict[str, Any]) -> dict[str, Any]:
    """The run's arguments without local-only keys and unset values; absolute paths shortened to their last part."""

    def portable(value: Any) -> Any:
        if isinstance(value, str) and os.path.isabs(value):
            return f".../{Path(value).name}"
        if isinstance(value, list):
            return [portable(item) for item in value]
        return value

    return {
        key: portable(value)
        for key, value in _to_plain(config).items()
        if key not in _LOCAL_ONLY_KEYS and value is not None and value != []
    }


def _read_run(checkpoint: Path, eval_results_path: Path | None) -> _Run:
    config_path = checkpoint / "config.json"
    if not config_path.is_file():
        raise ValueError(f"checkpoint_dir {checkpoint} has no config.json; it is not a `save_pretrained` folder")
    model_config = json.loads(config_path.read_text(encoding="utf-8"))
    if eval_results_path is None:
        candidates = [checkpoint / EVAL_RESULTS_FILE, checkpoint.parent / EVAL_RESULTS_FILE]
        eval_results_path = next((path for path in candidates if path.is_file()), None)
    results: dict[str, Any] = {}
    if eval_results_path is not None:
        results = json.loads(Path(eval_results_path).read_text(encoding="utf-8"))
    if isinstance(results.get("metrics"), dict):  # hfvision.training.save_final
        metrics, config, trainer = dict(results["metrics"]), dict(results.get("config") or {}), False
    else:  # Trainer's flat metrics, or a script's own results, with the run's arguments beside them
        metrics, trainer = dict(results), any(key.startswith("eval_") for key in results)
        config = dict(results.get("config") or {})
        metrics.pop("config", None)
        for folder in (checkpoint, checkpoint.parent):
            if not config and (folder / TRAINING_CONFIG_FILE).is_file():
                config = json.loads((folder / TRAINING_CONFIG_FILE).read_text(encoding="utf-8"))
    state_path = checkpoint / "trainer_state.json"
    if trainer and "global_step" not in metrics and state_path.is_file():
        metrics["global_step"] = json.loads(state_path.read_text(encoding="utf-8")).get("global_step")
    return _Run(checkpoint, model_config, metrics, config, trainer)


def _pipeline_tag(run: _Run, method: str) -> str | None:
    if run.architecture == "ScoreSdeModel" and run.model_config.get("backbone") == "unet":
        return "unconditional-image-generation"
    if run.architecture in ARCHITECTURE_PIPELINE_TAGS:
        return ARCHITECTURE_PIPELINE_TAGS[run.architecture]
    return METHOD_CARD_METADATA.get(method, {}).get("pipeline_tag")


def card_from_checkpoint(
    checkpoint_dir: str | Path,
    *,
    model_id: str | None = None,
    eval_results_path: str | Path | None = None,
    **template_vars: Any,
) -> ModelCard:
    """The model card of a saved checkpoint, from its files alone.

    Reads `config.json` (method, pipeline tag from `architectures`), `eval_results.json` in the folder or its parent
    (`hfvision.training.save_final`'s `{"metrics", "config"}`, or Trainer's flat `eval_*` metrics with the run's
    arguments in `training_config.json`) and the pictures the method's card shows.

    Args:
        checkpoint_dir: a `save_pretrained` folder of an hfvision model.
        model_id: the repo id the card names (usage snippets, `model-index`); default: the run's `--push_to_hub` /
            `--hub_model_id`, else `local/<folder name>` (re-render with the real id before publishing).
        eval_results_path: the results file, if not `eval_results.json` in the folder or its parent.
        **template_vars: overrides of the template variables (`model_description`, `extra_deviations`, ...).

    Returns:
        The rendered card.

    Raises:
        ValueError: if the folder has no config.json, or its `model_type` is not an hfvision method's.
    """
    checkpoint = Path(checkpoint_dir)
    run = _read_run(checkpoint, Path(eval_results_path) if eval_results_path is not None else None)
    model_type = run.model_config.get("model_type")
    method = MODEL_TYPE_METHODS.get(model_type)
    if method is None:
        raise ValueError(
            f"{checkpoint / 'config.json'} has model_type {model_type!r}; hfvision writes cards for "
            f"{sorted(MODEL_TYPE_METHODS)}"
        )
    if not run.metrics and not run.config:  # no run beside it (e.g. a converted checkpoint)
        spec = _CardSpec(
            DatasetInfo(
                "Not recorded",
                "",
                "there is no `eval_results.json` beside this checkpoint, so hfvision cannot say what it was trained "
                "on or how it scores",
            )
        )
    elif run.trainer:
        spec = _trainer_classification(run)
    elif method in _METHOD_SPECS:
        spec = _METHOD_SPECS[method](run)
    else:
        spec = _CardSpec(_local_dataset(run.arg("train_data", "data")))
    model_id = model_id or run.arg("push_to_hub") or run.arg("hub_model_id") or f"local/{_run_name(checkpoint)}"
    base_model = run.arg("model_name_or_path")
    base_model = base_model if _is_hub_id(base_model) else None
    details = f" ({spec.data_details})" if spec.data_details else ""
    steps = run.metrics.get("global_step")
    training_data = f"{spec.dataset.name}{details}: {spec.dataset.description}."
    if steps:
        training_data += f" {int(steps):,} optimizer steps."
    source = run.arg("model_name_or_path")
    if source and not base_model:
        training_data += f" Started from the local checkpoint `{_run_name(Path(source))}`."
    variables = {"architecture": run.architecture or None, **spec.template_vars, **template_vars}
    card = render_model_card(
        method,
        model_id=model_id,
        eval_results=spec.results,
        baselines=spec.baselines,
        training_config=_portable_config(run.config),
        datasets=[spec.dataset.hub_id] if spec.dataset.hub_id else [],
        pipeline_tag=_pipeline_tag(run, method),
        base_model=base_model,
        training_data=training_data,
        **variables,
    )
    if (checkpoint / TRAINING_CURVES).is_file():  # drawn by `save_final` when matplotlib is installed
        card.text = (
            card.text.rstrip("\n")
            + f"\n\n## Training curves\n\n![Losses, learning rate and evaluation metrics against the step]"
            f"({TRAINING_CURVES})\n"
        )
    return card


def _run_name(checkpoint: Path) -> str:
    """The run's name: the output folder of `<run>/final` (or of Trainer's output folder itself)."""
    folder = checkpoint.resolve()
    return (folder.parent if folder.name == "final" else folder).name


def write_model_card(
    checkpoint_dir: str | Path,
    *,
    model_id: str | None = None,
    eval_results_path: str | Path | None = None,
    **template_vars: Any,
) -> Path:
    """Render `card_from_checkpoint` into `checkpoint_dir/README.md`; returns that path."""
    card = card_from_checkpoint(checkpoint_dir, model_id=model_id, eval_results_path=eval_results_path, **template_vars)
    path = Path(checkpoint_dir) / "README.md"
    card.save(path)
    return path
