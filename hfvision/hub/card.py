"""Model cards from the Jinja templates in `model_cards/<method>.md`.

`render_model_card` fills a method's template with `huggingface_hub.ModelCard.from_template`: the YAML front matter
(license, library, pipeline tag, tags, datasets and a `model-index` built from `EvalResult`s) comes from
`ModelCardData`, the body from the template. Eval values are forwarded from the evaluation run as given; a missing or
non-finite value is an error, never a placeholder.

Where the templates are found, in order:
1. `hfvision/model_cards/<method>.md` inside the installed package (a wheel built with the repository's top-level
   `model_cards/` mapped onto the `hfvision.model_cards` package by `[tool.setuptools.package-dir]`);
2. `<repository>/model_cards/<method>.md` next to the `hfvision/` package folder (a source checkout or an editable
   install), the canonical copy that is edited.
"""

import dataclasses
import enum
import math
import numbers
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from huggingface_hub import EvalResult, ModelCard, ModelCardData

__all__ = ["METHOD_CARD_METADATA", "find_card_template", "render_model_card"]

# Hub metadata per method: the pipeline a checkpoint serves and its tags. Methods without an entry get generic tags.
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

_REQUIRED_EVAL_KEYS = ("task_type", "dataset_type", "dataset_name", "metric_type", "metric_value")
_EVAL_KEYS = {field.name for field in dataclasses.fields(EvalResult)}


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


def render_model_card(
    method: str,
    *,
    model_id: str,
    eval_results: list[dict[str, Any]],
    training_config: dict[str, Any],
    datasets: list[str],
    template_path: str | Path | None = None,
    **template_vars: Any,
) -> ModelCard:
    """Render a method's model card with Hub metadata and the measured eval results.

    Args:
        method: template name under `model_cards/`, e.g. `"pyramidclip"`; also picks the pipeline tag and tags
            from `METHOD_CARD_METADATA`.
        model_id: the Hub repo id the card describes (`"org/name"`); its last part names the `model-index` entry.
        eval_results: one dict per measured number, with the keys of `huggingface_hub.EvalResult`: required
            `task_type`, `dataset_type`, `dataset_name`, `metric_type`, `metric_value`; optional `task_name`,
            `dataset_split`, `dataset_config`, `metric_name`, `metric_config`, ... Values are forwarded unchanged
            (numpy/torch scalars become Python numbers).
        training_config: the run's hyperparameters, rendered as a YAML block.
        datasets: Hub ids of the training datasets, for the `datasets` metadata.
        template_path: a Jinja template to use instead of `find_card_template(method)`.
        **template_vars: extra template variables (for `pyramidclip.md`: `model_description`, `architecture`,
            `softening_alpha`, `training_data_description`, `extra_deviations`, `model_name`).

    Returns:
        The rendered `huggingface_hub.ModelCard`; `str(card)` is the README.md text.

    Raises:
        ValueError: if an eval result lacks a required key or value, has an unknown key, or its value is not a
            finite number.
        FileNotFoundError: if the method has no template.
    """
    results = [_eval_result(result) for result in eval_results]
    model_name = template_vars.pop("model_name", model_id.rstrip("/").split("/")[-1])
    metadata = METHOD_CARD_METADATA.get(method, {"tags": ["vision", method, "hfvision"]})
    card_data = ModelCardData(
        language="en",
        license="apache-2.0",
        library_name="transformers",
        pipeline_tag=metadata.get("pipeline_tag"),
        tags=list(metadata["tags"]),
        datasets=list(datasets) or None,
        model_name=model_name,
        eval_results=results or None,
    )
    training_config_yaml = yaml.safe_dump(
        _to_plain(training_config), sort_keys=False, default_flow_style=False, allow_unicode=True
    ).rstrip()
    path = Path(template_path) if template_path is not None else find_card_template(method)
    return ModelCard.from_template(
        card_data,
        template_path=str(path),
        model_id=model_id,
        model_name=model_name,
        eval_results=results,
        datasets=list(datasets),
        training_config_yaml=training_config_yaml,
        **template_vars,
    )
