"""Score-based generative models detect manifolds (Pidstrigach, arXiv 2206.01018): score models, SDE samplers,
manifold diagnostics, the `unconditional-sample-generation` pipeline, a point-cloud feature extractor and pictures."""

from .configuration_score_sde import EmpiricalScoreConfig, ScoreSdeConfig
from .diagnostics import (
    MemorizationStats,
    ScoreErrorEnergy,
    angle_histogram,
    distance_to_manifold_stats,
    estimate_intrinsic_dimension,
    flipd,
    memorization_stats,
    pairwise_distances,
    score_error_energy,
    score_singular_values,
)
from .feature_extraction_score_sde import ScoreSdeFeatureExtractor
from .manifolds import Circle, EmbeddedManifold, FlatTorus, Sphere, Torus3D, random_isometry
from .modeling_score_sde import (
    EmpiricalScoreModel,
    ScoreSdeModel,
    ScoreSdeOutput,
    ScoreSdePreTrainedModel,
    ScoreSdeSchedule,
)
from .pipeline_score_sde import ScoreSdeSampleGenerationPipeline
from .scheduling_score_sde import (
    LangevinCorrector,
    ScoreSdeEulerMaruyamaScheduler,
    ScoreSdeHeunOdeScheduler,
    ScoreSdeSamplerOutput,
    ScoreSdeScheduler,
    ScoreSdeSchedulerOutput,
    ScoreSdeVeAncestralScheduler,
    sample_score_sde,
)
from .visualization_score_sde import make_image_grid, plot_samples_on_manifold

__all__ = [
    "Circle",
    "EmbeddedManifold",
    "EmpiricalScoreConfig",
    "EmpiricalScoreModel",
    "FlatTorus",
    "LangevinCorrector",
    "MemorizationStats",
    "ScoreErrorEnergy",
    "ScoreSdeConfig",
    "ScoreSdeEulerMaruyamaScheduler",
    "ScoreSdeFeatureExtractor",
    "ScoreSdeHeunOdeScheduler",
    "ScoreSdeModel",
    "ScoreSdeOutput",
    "ScoreSdePreTrainedModel",
    "ScoreSdeSampleGenerationPipeline",
    "ScoreSdeSamplerOutput",
    "ScoreSdeSchedule",
    "ScoreSdeScheduler",
    "ScoreSdeSchedulerOutput",
    "ScoreSdeVeAncestralScheduler",
    "Sphere",
    "Torus3D",
    "angle_histogram",
    "distance_to_manifold_stats",
    "estimate_intrinsic_dimension",
    "flipd",
    "make_image_grid",
    "memorization_stats",
    "pairwise_distances",
    "plot_samples_on_manifold",
    "random_isometry",
    "sample_score_sde",
    "score_error_energy",
    "score_singular_values",
]
