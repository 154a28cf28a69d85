"""Knobs of the online ranking pipeline (label join, trainer, checkpoints, promotion), from VITRINA_* env vars.

``infra.settings.Settings`` reads them (field = the variable's name without ``VITRINA_``, lower case:
``VITRINA_RANKING_BATCH`` -> ``ranking_batch``) as text; ``load_ranking_settings(settings)`` checks and types
them here, naming the variable of a value it cannot use.

| variable | default | meaning |
|---|---|---|
| ``VITRINA_RANKING_MODEL_NAME`` | ranking | registry / S3 / Redis name of the model |
| ``VITRINA_RANKING_MODEL`` | default | size preset: ``default`` (FeatureConfig/ModelConfig defaults), ``paper`` (GRF's |
| | | published shape: 4 attention heads x 64, 8 experts) or ``tiny`` |
| ``VITRINA_RANKING_UPCOMING_LEN`` | 0 | length of GRF's upcoming-list input (0 = no such input, the older signature) |
| ``VITRINA_CHECKPOINT_EVERY_S`` | 14400 | checkpoint every N seconds of **event time** (GRF: 4 h); 0 = off |
| ``VITRINA_CHECKPOINT_EVERY_SAMPLES`` | 1000000 | ... or every N samples consumed by the trainer; 0 = off |
| ``VITRINA_CHECKPOINT_MIN_WALL_S`` | 60 | at most one scheduled checkpoint per N wall-clock seconds (a replay of |
| | | a week would otherwise export 42 versions back to back); operator requests are not limited |
| ``VITRINA_LABEL_WINDOW_S`` | 1800 | a play is attributed to an impression shown at most this long before it |
| ``VITRINA_LABEL_MAX_AGE_S`` | 21600 | an impression is labelled at the latest this long after it was shown |
| ``VITRINA_LABEL_LATENESS_S`` | 21600 | watermark = min over both inputs of the max event time seen - this |
| ``VITRINA_RANKING_ONLINE_EVERY_S`` | 30 | period of the per-version online metrics snapshots in the registry |
| ``VITRINA_RANKING_GATE`` | 1 | 0 = no gate model (the ranking-gate-samples processor is not registered) |
| ``VITRINA_RANKING_BATCH`` | 256 | training mini-batch size |
| ``VITRINA_RANKING_BUFFER`` | 100000 | bounded sample buffer; the oldest samples are dropped (and counted) when full |
| ``VITRINA_RANKING_LEARNING_RATE`` | 0.002 | Adam learning rate |
| ``VITRINA_RANKING_HOLDOUT_EVERY`` | 10 | 1 in N impressions (by id hash) is held out for evaluation |
| ``VITRINA_RANKING_EVAL_MIN_SAMPLES`` | 200 | evaluation window: holdout samples since the last checkpoint, at least this many |
| ``VITRINA_RANKING_PROMOTION_TOLERANCE`` | 0.01 | KION rule: no task AUC may drop more than this |
| ``VITRINA_RANKING_PROMOTION_LAST_N`` | 5 | ... below the mean of the active model's last N evaluations |
| ``VITRINA_RANKING_EXPORT_BATCH`` | 0 | fixed TFLite batch (e.g. 24); 0 = dynamic batch dimension |

Why the default lateness is 6 h: the watermark of a partition is the minimum over its two inputs
(impressions, playback) of the latest event time seen, minus the lateness. Player events can
come hours late (devices in GRF's offline mode upload when the network returns; the generated
stream emits each session's events at once, up to 9.4 h ahead of other viewers on the same
partition). Labelling the generated demo stream with a worst-case consumption order gave 3.2 %
wrong labels with 10 min of lateness, 2.0 % with 1 h, 0.7 % with 3 h and 0.1 % with 6 h (the
price: a label is final 6.5 h of event time after the impression). Set it lower for a live
stream with little disorder.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from infra.settings import Settings
from processors.ranking.features import FeatureConfig
from processors.ranking.labels import JoinerConfig
from processors.ranking.registry import MODEL_NAME_PATTERN, model_name_ok
from processors.ranking.schedule import CheckpointPolicy


# Model configs as ModelConfig keyword dicts: model.py imports TensorFlow, which only the
# training thread may load (a worker that never trains never pays for it).
PRESETS: dict[str, tuple[FeatureConfig, dict[str, int]]] = {
    "default": (FeatureConfig(), {}),
    "paper": (FeatureConfig(), dict(attention_heads=4, attention_head_dim=64, experts=8)),
    "tiny": (
        FeatureConfig(item_buckets=257, user_buckets=129, recent_len=8),
        dict(item_dim=8, user_dim=4, categorical_dim=2, numeric_dim=2, attention_heads=2,
             attention_head_dim=4, experts=2, expert_units=8, tower_units=4),
    ),
}


class RankingSettingsError(ValueError):
    """A VITRINA_* ranking variable has a value that cannot be used (names the variable)."""


def _text(settings: Settings, name: str) -> str:
    """The text of variable ``name`` as ``settings`` read it (its field is the name without ``VITRINA_``)."""
    return getattr(settings, name.removeprefix("VITRINA_").lower())


def _number(settings: Settings, name: str, kind: type, low: float) -> float | int:
    raw = _text(settings, name).strip()
    try:
        value = kind(raw)
    except ValueError:
        raise RankingSettingsError(f"{name}={raw!r} is not a {kind.__name__}") from None
    if value < low:
        raise RankingSettingsError(f"{name}={raw!r} must be >= {low}")
    return value


@dataclass(frozen=True)
class RankingSettings:
    model_name: str
    preset: str
    features: FeatureConfig
    model: dict[str, int]  # ModelConfig(**model)
    checkpoint_every_s: int
    checkpoint_every_samples: int
    checkpoint_min_wall_s: int
    window_s: int
    max_label_age_s: int
    lateness_s: int
    batch_size: int
    buffer_capacity: int
    learning_rate: float
    holdout_every: int
    eval_min_samples: int
    tolerance: float
    last_n: int
    export_batch: int | None
    online_every_s: float = 30.0  # the online metrics' snapshot period (streams/agents/ranking_online.py)
    gate: bool = True  # the ranking-gate-samples processor feeds the gate model trained beside the ranking model

    @property
    def joiner(self) -> JoinerConfig:
        return JoinerConfig(window=timedelta(seconds=self.window_s), max_label_age=timedelta(seconds=self.max_label_age_s))

    @property
    def lateness(self) -> timedelta:
        return timedelta(seconds=self.lateness_s)

    @property
    def policy(self) -> CheckpointPolicy:
        return CheckpointPolicy(
            every=timedelta(seconds=self.checkpoint_every_s) if self.checkpoint_every_s else None,
            every_samples=self.checkpoint_every_samples or None,
        )


def load_ranking_settings(settings: Settings) -> RankingSettings:
    name = settings.ranking_model_name
    if not model_name_ok(name):
        raise RankingSettingsError(f"VITRINA_RANKING_MODEL_NAME={name!r} must match {MODEL_NAME_PATTERN.pattern}")
    preset = settings.ranking_model
    if preset not in PRESETS:
        raise RankingSettingsError(f"VITRINA_RANKING_MODEL={preset!r}; one of {', '.join(PRESETS)}")
    every_s = int(_number(settings, "VITRINA_CHECKPOINT_EVERY_S", int, 0))
    every_samples = int(_number(settings, "VITRINA_CHECKPOINT_EVERY_SAMPLES", int, 0))
    if not every_s and not every_samples:
        raise RankingSettingsError("VITRINA_CHECKPOINT_EVERY_S and VITRINA_CHECKPOINT_EVERY_SAMPLES cannot both be 0")
    export_batch = int(_number(settings, "VITRINA_RANKING_EXPORT_BATCH", int, 0)) or None
    features, model = PRESETS[preset]
    upcoming = int(_number(settings, "VITRINA_RANKING_UPCOMING_LEN", int, 0))
    if upcoming:
        from dataclasses import replace as _replace
        features = _replace(features, upcoming_len=upcoming)
    return RankingSettings(
        model_name=name,
        preset=preset,
        features=features,
        model=dict(model),
        checkpoint_every_s=every_s,
        checkpoint_every_samples=every_samples,
        checkpoint_min_wall_s=int(_number(settings, "VITRINA_CHECKPOINT_MIN_WALL_S", int, 0)),
        window_s=int(_number(settings, "VITRINA_LABEL_WINDOW_S", int, 1)),
        max_label_age_s=int(_number(settings, "VITRINA_LABEL_MAX_AGE_S", int, 1)),
        lateness_s=int(_number(settings, "VITRINA_LABEL_LATENESS_S", int, 0)),
        batch_size=int(_number(settings, "VITRINA_RANKING_BATCH", int, 1)),
        buffer_capacity=int(_number(settings, "VITRINA_RANKING_BUFFER", int, 1)),
        learning_rate=float(_number(settings, "VITRINA_RANKING_LEARNING_RATE", float, 0.0)),
        holdout_every=int(_number(settings, "VITRINA_RANKING_HOLDOUT_EVERY", int, 2)),
        eval_min_samples=int(_number(settings, "VITRINA_RANKING_EVAL_MIN_SAMPLES", int, 1)),
        tolerance=float(_number(settings, "VITRINA_RANKING_PROMOTION_TOLERANCE", float, 0.0)),
        last_n=int(_number(settings, "VITRINA_RANKING_PROMOTION_LAST_N", int, 1)),
        export_batch=export_batch,
        online_every_s=float(_number(settings, "VITRINA_RANKING_ONLINE_EVERY_S", float, 1.0)),
        gate=settings.ranking_gate,
    )
