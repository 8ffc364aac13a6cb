"""Typed, validated parameters: one pydantic model per block of params.yaml.

A wrong key, type or value fails here, before any work starts, with one line naming
the dotted key (``data.image_size: must be a power of two, got 100``).

Every default here EQUALS its value in params.yaml (tests/test_config.py checks it key by
key), so a partial params file trains the model params.yaml describes, not another one.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any, Literal, Self

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from oasis_vqvae.distribute import StrategyName
from oasis_vqvae.errors import ConfigError
from oasis_vqvae.precision import PrecisionName

NonNegInt = Annotated[int, Field(ge=0)]
PosInt = Annotated[int, Field(gt=0)]
Fraction = Annotated[float, Field(ge=0.0, le=1.0)]


class Block(BaseModel):
    """Base of every params block: strict types, unknown keys rejected, immutable."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


def _power_of_two(value: int) -> int:
    if value & (value - 1):
        raise ValueError(f"must be a power of two, got {value}")
    return value


class SplitFractions(Block):
    """Share of subjects per split, for sources that do not come split (synthetic, raw OASIS-1)."""

    model_config = ConfigDict(populate_by_name=True)

    train: Fraction = 0.7
    validation: Fraction = Field(0.15, alias="validate")  # `validate` is taken by BaseModel
    test: Fraction = 0.15

    @model_validator(mode="after")
    def _sums_to_one(self) -> Self:
        total = self.train + self.validation + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"train + validate + test must sum to 1, got {total:g}")
        if min(self.train, self.validation, self.test) == 0.0:
            raise ValueError("every split needs a fraction above 0")
        return self


class SyntheticConfig(Block):
    """Size and labels of the built-in procedurally generated data set."""

    subjects: Annotated[int, Field(ge=3, le=999)] = 120  # case numbers have three digits
    slices_per_subject: PosInt = 8
    cdr_positive: Fraction = 0.5
    """Share of subjects with CDR > 0 (OASIS-1: 0.24); splits are stratified by CDR 0 / > 0."""


class Oasis1Config(Block):
    """How slices are cut from the raw OASIS-1 cross-sectional volumes (T88_111 atlas space)."""

    slice_range: tuple[NonNegInt, PosInt] = (48, 128)
    """Axial slice indices [start, stop) of the 176-slice T88 volume to keep."""
    slice_step: PosInt = 1
    demographics: str | None = None
    """Path or gs:// URI of oasis_cross-sectional.csv; its columns go into the manifest."""
    clip_percentile: Annotated[float, Field(gt=50.0, le=100.0)] = 99.5
    """Brain intensities are scaled so this percentile maps to 255."""

    @model_validator(mode="after")
    def _range_is_ordered(self) -> Self:
        start, stop = self.slice_range
        if start >= stop:
            raise ValueError(f"slice_range start must be below stop, got [{start}, {stop}]")
        return self


class DataConfig(Block):
    """The ingest stage: where slices come from and how the dataset is written."""

    source: Annotated[str, Field(min_length=1)] = "synthetic"
    """'synthetic', a folder or .zip of OASIS PNG slices, raw OASIS-1 discs, or a gs:// URI."""
    image_size: Annotated[int, Field(ge=8, le=1024)] = 64
    """Side of the stored square slices; sources of another size are resized."""
    png_size: PosInt = 256
    """Side every preprocessed OASIS PNG slice must have (anything else is a bad file)."""
    on_bad_file: Literal["error", "skip"] = "error"
    segmentation: bool = False
    """Also store the keras_png_slices_seg_* masks beside the slices."""
    split: SplitFractions = SplitFractions()
    seed: NonNegInt = 42
    images_per_shard: PosInt = 4096
    workers: NonNegInt = 0
    """Decoding processes; 0 means one per CPU core."""
    labels: Annotated[str, Field(min_length=1)] | None = None
    """Path or gs:// URI of a CSV of subject labels keyed by case number (``case`` column) for
    OASIS PNG slices; None: none (the synthetic source then uses its generator's own CSV)."""
    synthetic: SyntheticConfig = SyntheticConfig()
    oasis1: Oasis1Config = Oasis1Config()

    @field_validator("image_size")
    @classmethod
    def _image_size_power_of_two(cls, value: int) -> int:
        return _power_of_two(value)


class VQVAEConfig(Block):
    """VQ-VAE architecture and training."""

    filters: Annotated[tuple[PosInt, ...], Field(min_length=1)] = (64,)
    """Filters of the stride-2 4x4 convolutions; their count is the number of down-samplings."""
    residual_blocks: NonNegInt = 2
    residual_filters: PosInt = 32
    embedding_dim: PosInt = 16
    num_embeddings: Annotated[int, Field(ge=2)] = 256
    beta: Annotated[float, Field(ge=0.0)] = 0.25
    quantizer: Literal["ema", "plain"] = "ema"
    ema_decay: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.99
    data_init: bool = True
    """Start the codebook from encoder outputs of the first batch (no epochs lost to collapse)."""
    dead_code_threshold: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.5
    """Restart a code whose usage falls below this share of uniform use (1/K); 0 disables."""
    epochs: PosInt = 10
    batch_size: PosInt = 8
    learning_rate: Annotated[float, Field(gt=0.0)] = 2e-3
    seed: int = 0
    strategy: StrategyName = "auto"
    """tf.distribute strategy (see oasis_vqvae.distribute); batch_size is the global batch."""
    precision: PrecisionName = "auto"
    """Keras dtype policy to train in (see oasis_vqvae.precision); the saved model is float32."""


class PixelCNNConfig(Block):
    """PixelCNN prior over the VQ-VAE code grid."""

    filters: PosInt = 24
    residual_blocks: NonNegInt = 8
    kernel_size: Annotated[int, Field(ge=3)] = 7
    hidden_layers: NonNegInt = 2
    gated: bool = True
    embedding_dim: NonNegInt = 32
    """0: one-hot codes into the first layer (the Keras example); > 0: a learned embedding."""
    position_bias: bool = True
    """Learn a bias per grid position after the first layer (the model knows where it is)."""
    conditions: tuple[Annotated[str, Field(min_length=1)], ...] = ("slice_level", "cdr")
    """Conditions (names of codes.json ``conditions``) the prior is conditioned on, in
    order; () trains an unconditional prior. Training rows missing a value are skipped."""
    condition_dim: PosInt = 32
    """Width of the condition embedding added to every gated layer's gates."""
    continuous_encoding: Literal["linear", "fourier"] = "fourier"
    """How a continuous condition is embedded: linear (value times a vector) or fourier
    (the value and sin/cos of it at 6 frequencies, through a dense layer)."""
    condition_dropout: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.1
    """Share of training samples whose conditions are replaced by a learned null, so the
    model also samples unconditionally (needed for generate.guidance)."""
    condition_maps: NonNegInt = 16
    """> 0: the position bias also depends on the conditions, through this many low-rank
    spatial maps (where brain and background lie changes with the slice level). 0, or no
    conditions, or no position_bias: the bias is the same for every condition."""
    dilations: Annotated[tuple[PosInt, ...], Field(min_length=1)] = (1, 2, 4, 8)
    """Gated only: dilation of each gated layer's vertical stack after the first, cycled
    over the layers; e.g. [1, 2, 4, 8] lets 8 layers see 33 code rows up instead of 11."""
    epochs: PosInt = 15
    batch_size: PosInt = 8
    learning_rate: Annotated[float, Field(gt=0.0)] = 3e-3
    learning_rate_schedule: Literal["constant", "cosine"] = "cosine"
    """constant, or cosine: decays from learning_rate to 0 over all epochs' steps."""
    seed: int = 0
    strategy: StrategyName = "auto"
    """tf.distribute strategy (see oasis_vqvae.distribute); batch_size is the global batch."""
    precision: PrecisionName = "auto"
    """Keras dtype policy to train in (see oasis_vqvae.precision); the saved model is float32."""

    @field_validator("kernel_size")
    @classmethod
    def _odd(cls, value: int) -> int:
        if value % 2 == 0:
            raise ValueError(f"must be odd, got {value}")
        return value

    @model_validator(mode="after")
    def _dilations_are_gated(self) -> Self:
        if not self.gated and max(self.dilations) > 1:
            raise ValueError(f"dilations {list(self.dilations)} need gated: true (or [1])")
        return self

    @field_validator("conditions")
    @classmethod
    def _unique(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        repeated = sorted({name for name in value if value.count(name) > 1})
        if repeated:
            raise ValueError(f"{repeated[0]!r} is listed twice")
        return value


def _condition_request(name: str, request: Any) -> Any:
    """Check one entry of ``generate.conditions`` (see `GenerateConfig.conditions`)."""

    def scalar(value: Any) -> bool:
        return isinstance(value, str | int | float) and not isinstance(value, bool)

    if scalar(request) or (
        isinstance(request, list) and request and all(scalar(v) for v in request)
    ):
        return request
    raise ValueError(
        f"{name}: expected a value, a non-empty list of values, 'uniform' or 'data', "
        f"got {request!r}"
    )


class GenerateConfig(Block):
    """Sampling new slices from the PixelCNN prior."""

    count: PosInt = 768
    """Samples to draw; enough that the evaluation's tests (C2ST, coverage, levels) have power."""
    temperature: Annotated[float, Field(gt=0.0)] = 1.0
    seed: NonNegInt = 0
    batch_size: PosInt = 16
    sampler: Literal["fast", "naive"] = "fast"
    """fast: each layer computed at the current position only; naive: a full pass per code.
    Both give the same codes; naive is kept for checking."""
    conditions: str | dict[str, Any] = {}
    """What a conditional prior is asked for. ``data`` or ``{}``: every condition drawn
    (seeded) from the training rows, jointly. A mapping name -> a value, a list of values,
    ``uniform`` (continuous: evenly spaced over the range the model saw; categorical: all
    its values) or ``data``: the listed values of all names form a balanced grid (their
    product), cycled over the samples; unlisted names and ``data`` ones are drawn from the
    training rows that match the sample's categorical values."""
    guidance: Annotated[float, Field(ge=0.0)] = 0.5
    """Classifier-free guidance weight w: logits (1 + w) conditional - w unconditional;
    0 samples the plain conditional model, and is what an unconditional prior needs
    (> 0 needs a prior trained with pixelcnn.condition_dropout > 0)."""

    @field_validator("conditions")
    @classmethod
    def _requests(cls, value: str | dict[str, Any]) -> str | dict[str, Any]:
        if isinstance(value, str):
            if value != "data":
                raise ValueError(f"expected 'data' or a mapping of condition names, got {value!r}")
            return value
        return {name: _condition_request(name, request) for name, request in value.items()}


class TwoSampleTestConfig(Block):
    """The classifier two-sample tests: a small CNN tells real held-out slices from samples."""

    folds: Annotated[int, Field(ge=2, le=20)] = 4
    """Cross-fitting: one classifier per fold of subjects, trained on the others, scores it."""
    steps: PosInt = 200
    """Training batches of each classifier, always all of them (the result cannot depend on
    load)."""
    batch_size: PosInt = 32
    seed: int = 0


class ProbeConfig(Block):
    """The probe CNN trained on real training slices to predict slice level and attributes."""

    steps: PosInt = 400
    """Training batches (a fixed number, seeded batches: same inputs, same probe)."""
    batch_size: PosInt = 32
    learning_rate: Annotated[float, Field(gt=0.0)] = 1e-3
    seed: int = 0


class CoverageConfig(Block):
    """Precision / recall and density / coverage in the probe's feature space."""

    k: PosInt = 5
    """Neighbours defining each point's k-NN ball (Naeem et al. 2020 recommend 5)."""


class EvaluateConfig(Block):
    """Evaluation of reconstructions and samples."""

    batch_size: PosInt = 64
    copy_threshold: Annotated[float, Field(gt=0.0, le=1.0)] = 0.95
    """A sample whose SSIM to its nearest training slice reaches this is counted as a copy."""
    nearest_candidates: NonNegInt = 16
    """0: exact nearest-neighbour search (SSIM to every slice); k: exact SSIM to the k nearest
    by pooled L2 distance only (much faster on large sets, may miss the SSIM-nearest)."""
    diversity_images: Annotated[int, Field(ge=2)] = 100
    """At most this many images (seeded choice) per set for the mean pairwise MS-SSIM."""
    min_images: Annotated[int, Field(ge=2)] = 50
    """Fewest images per set (real held-out, samples) for the C2STs, coverage and level
    distance to be meaningful; fewer stops the stage with an error saying so."""
    bootstrap: Annotated[int, Field(ge=10)] = 1000
    """Bootstrap resamples of every interval that is not a Wilson interval."""
    level_bins: Annotated[int, Field(ge=2)] = 10
    """Equal bins of [0, 1] for the slice-level histograms and their total variation."""
    outline_tolerance: Annotated[float, Field(ge=0.0, le=0.5)] = 0.03
    """How far (a share) a head-outline feature may lie outside the range of the real
    training slices before the image counts as broken (:mod:`oasis_vqvae.outlines`)."""
    seed: int = 0
    """Seeds the bootstraps and the shuffled conditions."""
    c2st: TwoSampleTestConfig = TwoSampleTestConfig()
    probe: ProbeConfig = ProbeConfig()
    coverage: CoverageConfig = CoverageConfig()


class AugmentConfig(Block):
    """Classic augmentation of the utility stage's real + augmentation arm, drawn per image."""

    flip: bool = True
    """Mirror left-right with probability 1/2."""
    rotation: Annotated[float, Field(ge=0.0, le=45.0)] = 10.0
    """Largest rotation, degrees."""
    shift: Annotated[float, Field(ge=0.0, lt=0.5)] = 0.05
    """Largest shift, share of the image side."""
    scale: Annotated[float, Field(ge=0.0, lt=0.5)] = 0.05
    """Largest relative zoom in or out."""
    intensity: Annotated[float, Field(ge=0.0, le=0.5)] = 0.1
    """Largest contrast change (x * (1 + c)) and twice the largest brightness offset."""


class UtilityConfig(Block):
    """Downstream utility: does synthetic data help a classifier of a subject label."""

    target: Annotated[str, Field(min_length=1)] = "cdr"
    """A condition of the dataset's manifest (and of the labelled samples) to classify."""
    threshold: float | None = 0.0
    """Binary task: class 1 is target > threshold (cdr > 0: any dementia); null: one class
    per value of a categorical target (multi-class when it has more than two values)."""
    real_fractions: Annotated[
        tuple[Annotated[float, Field(gt=0.0, le=1.0)], ...], Field(min_length=1)
    ] = (0.25, 0.5, 1.0)
    """Shares of the training SUBJECTS kept for the low-data curve (seeded, per class)."""
    synthetic_ratio: Annotated[float, Field(gt=0.0)] = 1.0
    """Synthetic slices added per real training slice in the real + synthetic arm."""
    seeds: Annotated[tuple[int, ...], Field(min_length=3)] = (0, 1, 2)
    """Each arm is trained once per seed (weights, batches and subject subsets)."""
    steps: PosInt = 200
    """Training batches of every classifier, in every arm."""
    batch_size: PosInt = 32
    learning_rate: Annotated[float, Field(gt=0.0)] = 1e-3
    filters: Annotated[tuple[PosInt, ...], Field(min_length=1)] = (16, 32, 32)
    """Stride-2 3x3 convolutions of the classifier."""
    image_size: NonNegInt = 32
    """Side the slices are average-pooled to for the classifier; 0: as stored."""
    bootstrap: Annotated[int, Field(ge=100)] = 1000
    """Bootstrap replicates (test subjects drawn with replacement) of every interval."""
    augment: AugmentConfig = AugmentConfig()

    @field_validator("real_fractions")
    @classmethod
    def _increasing_to_one(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if any(b <= a for a, b in zip(value, value[1:], strict=False)) or value[-1] != 1.0:
            raise ValueError(f"must increase and end with 1.0 (every arm's full set), got {value}")
        return value

    @field_validator("seeds")
    @classmethod
    def _distinct(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if len(set(value)) != len(value):
            raise ValueError(f"must be distinct, got {list(value)}")
        return value

    @field_validator("image_size")
    @classmethod
    def _zero_or_power_of_two(cls, value: int) -> int:
        return _power_of_two(value) if value else value


class TrackingConfig(Block):
    """MLflow tracking. MLFLOW_TRACKING_URI, when set, wins over tracking_uri."""

    experiment: Annotated[str, Field(min_length=1)] = "oasis-vqvae"
    tracking_uri: str = "sqlite:///mlflow/mlflow.db"
    enabled: bool = True


class Params(Block):
    """All of params.yaml."""

    data: DataConfig = DataConfig()
    vqvae: VQVAEConfig = VQVAEConfig()
    pixelcnn: PixelCNNConfig = PixelCNNConfig()
    generate: GenerateConfig = GenerateConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    utility: UtilityConfig = UtilityConfig()
    tracking: TrackingConfig = TrackingConfig()

    @model_validator(mode="after")
    def _vqvae_fits_image(self) -> Self:
        steps = len(self.vqvae.filters)
        latent = self.data.image_size >> steps
        if latent < 4:
            raise ValueError(
                f"vqvae.filters: {steps} down-samplings turn data.image_size "
                f"{self.data.image_size} into a {latent}x{latent} code grid; need at least 4x4, "
                "use fewer filters or larger images"
            )
        return self

    @model_validator(mode="after")
    def _guidance_has_an_unconditional_model(self) -> Self:
        # Checked here too, not only by generate on the model: a pipeline run fails at once,
        # not after training the prior.
        if not self.generate.guidance:
            return self
        if not self.pixelcnn.conditions:
            reason = "pixelcnn.conditions is empty"
        elif not self.pixelcnn.condition_dropout:
            reason = "pixelcnn.condition_dropout is 0, so the prior learns no unconditional model"
        else:
            return self
        raise ValueError(
            f"generate.guidance {self.generate.guidance:g} needs a conditional prior trained with "
            f"pixelcnn.condition_dropout > 0, but {reason}; set generate.guidance=0"
        )


def load_params(path: str | Path, overrides: Iterable[str] = ()) -> Params:
    """Read params.yaml, apply ``dotted.key=value`` overrides and validate.

    Raises:
        ConfigError: one line naming the file, the key and what is wrong.
    """
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such params file") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}".replace("\n", " ")) from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: must hold a mapping of blocks, got {type(raw).__name__}")
    for override in overrides:
        _apply_override(raw, override)
    return validate_params(raw, origin=str(path))


def validate_params(raw: dict[str, Any], origin: str = "params") -> Params:
    """Validate a params mapping (as read from YAML) into :class:`Params`."""
    try:
        # Through JSON so that strict mode accepts YAML lists for tuples and ints for floats.
        return Params.model_validate_json(json.dumps(raw, default=str))
    except ValidationError as err:
        raise ConfigError(f"{origin}: {format_validation_error(err)}") from None


REPLACED_KEYS = {
    "evaluate.c2st.held_out": "evaluate.c2st.folds (the C2ST is cross-fitted: e.g. folds: 4)",
}
"""Keys earlier params files may still hold, and what took their place."""


def format_validation_error(err: ValidationError) -> str:
    """Render pydantic errors as ``dotted.key: problem`` joined on one line."""
    problems = []
    for item in err.errors():
        key = ".".join(str(part) for part in item["loc"])
        if item["type"] == "value_error":  # our own validators word the whole problem
            message = item["msg"].removeprefix("Value error, ")
        elif item["type"] == "extra_forbidden" and key in REPLACED_KEYS:
            message = f"no longer a key: use {REPLACED_KEYS[key]}"
        elif item["type"] == "extra_forbidden":
            message = "unknown key (check the spelling against params.yaml)"
        else:
            message = f"{item['msg'].lower()}, got {item['input']!r}"
        problems.append(f"{key}: {message}" if key else message)
    return "; ".join(problems)


def _apply_override(raw: dict[str, Any], override: str) -> None:
    key, sep, text = override.partition("=")
    if not sep or not key:
        raise ConfigError(f"--set {override!r}: expected dotted.key=value")
    try:
        value = yaml.safe_load(text) if text else ""
    except yaml.YAMLError:
        value = text
    *parents, leaf = key.split(".")
    node = raw
    for depth, part in enumerate(parents):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            prefix = ".".join(parents[: depth + 1])
            raise ConfigError(f"--set {key}: {prefix} is a value, not a block")
        node = child
    node[leaf] = value


def flatten(params: BaseModel, prefix: str = "") -> dict[str, Any]:
    """Dotted-key view of a params block, e.g. for logging to MLflow."""
    flat: dict[str, Any] = {}
    for name, value in params.model_dump(by_alias=True).items():
        _flatten_into(flat, f"{prefix}{name}", value)
    return flat


def _flatten_into(flat: dict[str, Any], key: str, value: Any) -> None:
    if isinstance(value, dict):
        for name, child in value.items():
            _flatten_into(flat, f"{key}.{name}", child)
    else:
        flat[key] = value
