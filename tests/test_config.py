"""params.yaml validation: the shipped file is valid and every kind of mistake names its key."""

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from oasis_vqvae.config import Params, flatten, load_params
from oasis_vqvae.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


def test_shipped_params_are_valid_and_complete():
    params = load_params(REPO / "params.yaml")
    shipped = yaml.safe_load((REPO / "params.yaml").read_text())
    assert set(shipped) == set(Params.model_fields)
    # Every key of the schema is spelled out in params.yaml, so users see what they can set.
    flat_shipped = {k for k in flatten(params)}
    assert flat_shipped == set(_dotted(shipped))


def _dotted(tree, prefix=""):
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from _dotted(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}"


def test_overrides_are_typed_from_yaml():
    params = load_params(
        REPO / "params.yaml",
        [
            "data.image_size=128",
            "data.split.validate=0.2",
            "data.split.test=0.1",
            "vqvae.filters=[16, 32, 64]",
            "data.oasis1.demographics=/x/oasis.csv",
        ],
    )
    assert params.data.image_size == 128
    assert params.data.split.validation == 0.2
    assert params.vqvae.filters == (16, 32, 64)
    assert params.data.oasis1.demographics == "/x/oasis.csv"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("data.image_size=100", "data.image_size: must be a power of two, got 100"),
        ("data.image_size=abc", "data.image_size: input should be a valid integer"),
        ("data.split.train=1.5", "data.split.train: input should be less than or equal to 1"),
        ("data.split.train=0.8", "data.split: train + validate + test must sum to 1"),
        ("data.synthetic.subjects=-3", "data.synthetic.subjects: input should be greater"),
        ("data.on_bad_file=ignore", "data.on_bad_file: input should be 'error' or 'skip'"),
        ("data.imagesize=64", "data.imagesize: unknown key"),
        ("evaluate.c2st.held_out=0.5", "evaluate.c2st.held_out: no longer a key: use evaluate."),
        ("data.oasis1.slice_range=[90, 10]", "data.oasis1: slice_range start must be below stop"),
        ("vqvae.filters=[8, 8, 8, 8, 8]", "vqvae.filters: 5 down-samplings"),
        ("pixelcnn.kernel_size=4", "pixelcnn.kernel_size: must be odd"),
        ("pixelcnn.dilations=[]", "pixelcnn.dilations:"),
        ("pixelcnn.dilations=[0]", "pixelcnn.dilations.0:"),
        ("generate.temperature=0", "generate.temperature: input should be greater than 0"),
        (
            "pixelcnn.conditions=[]",
            "generate.guidance 0.5 needs a conditional prior trained "
            "with pixelcnn.condition_dropout > 0, but pixelcnn.conditions is empty; set "
            "generate.guidance=0",
        ),
        ("pixelcnn.condition_dropout=0", "but pixelcnn.condition_dropout is 0"),
    ],
)
def test_bad_values_name_the_key(override, message):
    with pytest.raises(ConfigError) as info:
        load_params(REPO / "params.yaml", [override])
    text = str(info.value)
    assert message in text
    assert "\n" not in text


def test_dilations_need_a_gated_prior():
    overrides = ["pixelcnn.gated=false", "pixelcnn.dilations=[1, 2]"]
    with pytest.raises(ConfigError, match=r"pixelcnn: dilations \[1, 2\] need gated: true"):
        load_params(REPO / "params.yaml", overrides)


def test_bad_override_syntax_and_files(tmp_path):
    with pytest.raises(ConfigError, match="expected dotted.key=value"):
        load_params(REPO / "params.yaml", ["data.image_size"])
    with pytest.raises(ConfigError, match="data.image_size is a value, not a block"):
        load_params(REPO / "params.yaml", ["data.image_size.x=1"])
    with pytest.raises(ConfigError, match="no such params file"):
        load_params(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_params(bad)


def test_missing_blocks_take_defaults(tmp_path):
    small = tmp_path / "params.yaml"
    small.write_text("data:\n  image_size: 32\n")
    assert load_params(small).data.image_size == 32
    assert load_params(small).vqvae == Params().vqvae


def _schema_defaults(model: type[BaseModel], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted key, default) of every leaf field of the schema that has a default."""
    for name, field in model.model_fields.items():
        key = f"{prefix}{field.alias or name}"
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            yield from _schema_defaults(annotation, f"{key}.")
        elif not field.is_required():
            yield key, field.get_default(call_default_factory=True)


def _values(params: BaseModel, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted key, value) of every leaf field of a loaded params block, as _schema_defaults."""
    for name, field in type(params).model_fields.items():
        key, value = f"{prefix}{field.alias or name}", getattr(params, name)
        if isinstance(value, BaseModel):
            yield from _values(value, f"{key}.")
        else:
            yield key, value


def test_schema_defaults_equal_params_yaml():
    """One source of truth: a key left out of a params file means what params.yaml says.

    Generic over every block and key, so keys added later are checked too.
    """
    shipped = dict(_values(load_params(REPO / "params.yaml")))
    defaults = dict(_schema_defaults(Params))
    assert defaults, "the schema has no defaults at all?"
    differ = {
        key: (default, shipped.get(key, "<missing>"))
        for key, default in defaults.items()
        if _comparable(default) != _comparable(shipped.get(key, "<missing>"))
    }
    assert not differ, f"config.py default != params.yaml (key: (default, params.yaml)): {differ}"
    # A params file with only one block gives exactly params.yaml's other blocks.
    assert Params() == load_params(REPO / "params.yaml")


def _comparable(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json", by_alias=True)
    return json.loads(json.dumps(value))  # tuples -> lists, as in the flattened params


PRESETS = sorted((REPO / "params").glob("*.yaml"))


@pytest.mark.parametrize("preset", PRESETS, ids=lambda path: path.name)
def test_presets_are_valid_and_complete(preset):
    # A key left out of a preset would silently take the demo's default (e.g. a gated prior).
    params = load_params(preset)
    shipped = yaml.safe_load(preset.read_text())
    assert set(shipped) == set(Params.model_fields)
    assert set(flatten(params)) == set(_dotted(shipped))
    assert params.data.image_size == 256


def test_presets_are_the_seed_and_the_recommended_set_up():
    assert {path.name for path in PRESETS} >= {"oasis.yaml", "seed.yaml"}
    seed = load_params(REPO / "params" / "seed.yaml")
    assert seed.vqvae.filters == (32, 64)  # 64x64 code grid at 256 px
    assert seed.vqvae.num_embeddings == 128
    assert (seed.pixelcnn.gated, seed.pixelcnn.embedding_dim, seed.pixelcnn.position_bias) == (
        False, 0, False
    )  # fmt: skip
    assert seed.pixelcnn.conditions == ()
    best = load_params(REPO / "params" / "oasis.yaml")
    # A 64x64 code grid (the sulci survive), its layout held by the slice-level condition maps.
    assert best.data.image_size >> len(best.vqvae.filters) == 64
    assert best.pixelcnn.condition_maps > 0
    assert max(best.pixelcnn.dilations) > 1  # the prior sees across the 64x64 grid
    assert best.vqvae.num_embeddings == 256
    assert best.pixelcnn.gated and best.pixelcnn.position_bias and best.pixelcnn.embedding_dim
    assert best.pixelcnn.conditions == ("slice_level",)  # PNG slices know their level only
    assert best.generate.count >= 512
