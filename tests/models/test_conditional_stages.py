"""train-pixelcnn and generate with conditions, on a fabricated codes directory.

The codes directory is what extract-codes writes (SPLIT.npy, SPLIT_conditions.csv,
codes.json with ``conditions``) but made here, with subject attributes the data on main does
not have yet (categorical ``cdr`` and ``sex``, continuous ``age``, one missing CDR). The
VQ-VAE generate decodes with is an untrained tiny one (only its grid shape matters here).
"""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from oasis_vqvae.config import load_params
from oasis_vqvae.data.conditions import load_conditions
from oasis_vqvae.data.shards import load_images, read_manifest
from oasis_vqvae.errors import ConfigError, DataError

REPO = Path(__file__).resolve().parents[2]
GRID, K, IMAGE = (4, 4), 8, 16
SPECS = {
    "slice_level": {"kind": "continuous", "range": [0.0, 1.0]},
    "age": {"kind": "continuous", "range": [20.0, 90.0]},
    "sex": {"kind": "categorical", "values": ["F", "M"]},
    "cdr": {"kind": "categorical", "values": [0.0, 0.5, 1.0, 2.0]},
}
TINY = [
    "pixelcnn.filters=8", "pixelcnn.residual_blocks=1", "pixelcnn.kernel_size=3",
    "pixelcnn.hidden_layers=1", "pixelcnn.embedding_dim=4", "pixelcnn.epochs=2",
    "pixelcnn.batch_size=8", "pixelcnn.condition_dim=8", "pixelcnn.precision=float32",
    "generate.count=6", "generate.batch_size=4", "tracking.enabled=false",
]  # fmt: skip


def _params(*extra: str):
    return load_params(REPO / "params.yaml", [*TINY, *extra])


def _split_table(rng: np.random.Generator, n: int, split: str) -> pd.DataFrame:
    subjects = [f"{split}-{i // 4:02d}" for i in range(n)]
    table = pd.DataFrame({"subject": subjects, "slice": [i % 4 for i in range(n)]})
    table["slice_level"] = (table["slice"] / 3.0).astype(float)
    by_subject = {s: rng.integers(0, 4) for s in set(subjects)}
    table["age"] = [40.0 + 10 * by_subject[s] for s in subjects]
    table["sex"] = ["F" if by_subject[s] % 2 else "M" for s in subjects]
    table["cdr"] = [[0.0, 0.5, 1.0, 0.5][by_subject[s]] for s in subjects]
    return table


@pytest.fixture(scope="module")
def codes_dir(tmp_path_factory) -> Path:
    """Codes whose top row holds the CDR's index: a learnable dependence on a label."""
    out = tmp_path_factory.mktemp("codes")
    rng = np.random.default_rng(0)
    for split, n in (("train", 48), ("validate", 16), ("test", 8)):
        table = _split_table(rng, n, split)
        codes = rng.integers(4, K, size=(n, *GRID))
        codes[:, 0, :] = np.array([SPECS["cdr"]["values"].index(c) for c in table["cdr"]])[:, None]
        if split == "train":
            table.loc[3, "cdr"] = None  # a subject's slice without a CDR: skipped
        np.save(out / f"{split}.npy", codes.astype(np.uint8))
        table.to_csv(out / f"{split}_conditions.csv", index=False)
    manifest = {
        "num_embeddings": K, "grid_shape": list(GRID), "dtype": "uint8",
        "slices": {"train": 48, "validate": 16, "test": 8}, "dataset_hash": "sha256:x",
        "conditions": SPECS,
    }  # fmt: skip
    (out / "codes.json").write_text(json.dumps(manifest))
    return out


@pytest.fixture(scope="module")
def vqvae_dir(tmp_path_factory) -> Path:
    import keras

    from oasis_vqvae.models import build_vqvae

    keras.utils.set_random_seed(0)
    out = tmp_path_factory.mktemp("vqvae")
    model = build_vqvae(IMAGE, filters=(8, 8), residual_blocks=0, residual_filters=4,
                        embedding_dim=4, num_embeddings=K)  # fmt: skip
    model.save(out / "vqvae.keras")
    return out


@pytest.fixture(scope="module")
def prior_dir(codes_dir, tmp_path_factory) -> Path:
    from oasis_vqvae.stages.train_pixelcnn import train_pixelcnn

    out = tmp_path_factory.mktemp("prior") / "pixelcnn"
    params = _params("pixelcnn.conditions=[slice_level, cdr, sex, age]")
    return train_pixelcnn(params, codes_dir, out)


def test_train_writes_conditions_json_and_the_training_rows(prior_dir):
    described = json.loads((prior_dir / "conditions.json").read_text())
    assert described["names"] == ["slice_level", "cdr", "sex", "age"]
    assert described["conditions"]["cdr"]["encoding"] == "embedding"
    assert described["conditions"]["cdr"]["values"] == [0.0, 0.5, 1.0, 2.0]
    assert described["conditions"]["cdr"]["seen"] == [0.0, 0.5, 1.0]  # no 2.0 in train
    assert described["conditions"]["age"]["encoding"] == _params().pixelcnn.continuous_encoding
    assert described["conditions"]["age"]["seen"][0] >= 40.0
    assert described["condition_dropout"] == pytest.approx(0.1)
    assert described["rows"]["train"] == {"used": 47, "skipped": 1}
    table = pd.read_csv(prior_dir / "train_conditions.csv")
    assert list(table.columns) == ["subject", "slice_level", "cdr", "sex", "age"]
    assert len(table) == 47 and table["cdr"].notna().all()
    metrics = json.loads((prior_dir / "metrics.json").read_text())
    assert metrics["skipped_train_rows"] == 1


def test_saved_conditional_prior_loads_in_safe_mode(prior_dir):
    import keras

    import oasis_vqvae.models  # noqa: F401

    model = keras.models.load_model(prior_dir / "pixelcnn.keras", safe_mode=True)
    assert [tuple(i.shape) for i in model.inputs] == [(None, *GRID), (None, 4)]


def test_unknown_condition_lists_what_the_dataset_has(codes_dir, tmp_path):
    from oasis_vqvae.stages.train_pixelcnn import train_pixelcnn

    params = _params("pixelcnn.conditions=[slice_level, mmse]")
    with pytest.raises(DataError, match=r"pixelcnn.conditions: unknown condition 'mmse'.*'age'"):
        train_pixelcnn(params, codes_dir, tmp_path / "p")


def _generate(params, vqvae_dir, prior_dir, out):
    from oasis_vqvae.stages.generate import generate

    return generate(params, vqvae_dir, prior_dir, out)


def test_generate_from_data_writes_labels_and_a_dataset(vqvae_dir, prior_dir, tmp_path):
    out = _generate(_params(), vqvae_dir, prior_dir, tmp_path / "samples")

    labels = pd.read_csv(out / "labels.csv")
    assert list(labels.columns) == ["file", "slice_level", "cdr", "sex", "age"]
    assert list(labels["file"]) == [f"sample_{i:04d}.png" for i in range(6)]
    training = pd.read_csv(prior_dir / "train_conditions.csv")
    for row in labels.itertuples():  # every drawn row is a training row
        same = training[(training.cdr == row.cdr) & (training.sex == row.sex)
                        & (training.age == row.age)]  # fmt: skip
        assert np.isclose(same.slice_level, row.slice_level).any()

    dataset = out / "dataset"
    manifest = read_manifest(dataset)
    assert manifest["counts"] == {"train": 6, "validate": 0, "test": 0}
    assert manifest["source"]["kind"] == "generated"
    assert manifest["conditions"]["cdr"] == {"kind": "categorical", "values": [0.0, 0.5, 1.0, 2.0]}
    conditions = load_conditions(dataset, "train")
    assert list(conditions["subject"]) == [f"sample-{i:04d}" for i in range(6)]
    np.testing.assert_allclose(conditions["slice_level"], labels["slice_level"], atol=1e-6)
    assert list(conditions["cdr"]) == list(labels["cdr"])
    assert list(conditions["sex"]) == list(labels["sex"])
    images = load_images(dataset, "train")
    assert images.shape[:3] == (6, IMAGE, IMAGE)
    assert load_conditions(dataset, "validate").empty


def test_generate_balanced_grid_and_uniform_levels(vqvae_dir, prior_dir, tmp_path):
    params = _params(
        "generate.count=8", "generate.conditions.cdr=[0, 1]",
        "generate.conditions.sex=uniform", "generate.conditions.slice_level=uniform",
        "generate.conditions.age=50",
    )  # fmt: skip
    labels = pd.read_csv(_generate(params, vqvae_dir, prior_dir, tmp_path / "s") / "labels.csv")

    assert list(labels["cdr"]) == [0.0, 0.0, 1.0, 1.0] * 2
    assert list(labels["sex"]) == ["F", "M"] * 4
    assert list(labels["age"]) == [50.0] * 8
    np.testing.assert_allclose(labels["slice_level"], [0.25] * 4 + [0.75] * 4)


def test_generate_with_guidance_is_seeded(vqvae_dir, prior_dir, tmp_path):
    params = _params("generate.guidance=2.0", "generate.conditions.cdr=0.5")
    a = _generate(params, vqvae_dir, prior_dir, tmp_path / "a")
    naive = _params(
        "generate.guidance=2.0", "generate.conditions.cdr=0.5", "generate.sampler=naive"
    )
    b = _generate(naive, vqvae_dir, prior_dir, tmp_path / "b")
    np.testing.assert_array_equal(np.load(a / "codes.npy"), np.load(b / "codes.npy"))


@pytest.mark.parametrize(
    "override, message",
    [
        ("generate.conditions.mmse=20", r"generate.conditions.mmse: the PixelCNN was not "
                                        r"conditioned on 'mmse'"),
        ("generate.conditions.cdr=2", r"generate.conditions.cdr: 2 is not among the values "
                                      r"the model saw \[0.0, 0.5, 1.0\]"),
        ("generate.conditions.sex=X", r"generate.conditions.sex: 'X' is not among"),
        ("generate.conditions.age=[50, 95]", r"generate.conditions.age: 95 is outside the range"),
        ("generate.conditions.slice_level=low", r"generate.conditions.slice_level: 'low' is "
                                                r"outside"),
    ],
)  # fmt: skip
def test_generate_refuses_what_the_model_never_saw(vqvae_dir, prior_dir, tmp_path, override,
                                                    message):  # fmt: skip
    with pytest.raises(ConfigError, match=message):
        _generate(_params(override), vqvae_dir, prior_dir, tmp_path / "s")
    assert not (tmp_path / "s").exists()


def test_unconditional_prior_takes_no_conditions(codes_dir, vqvae_dir, tmp_path):
    from oasis_vqvae.stages.train_pixelcnn import train_pixelcnn

    params = _params("pixelcnn.conditions=[]", "pixelcnn.epochs=1", "generate.guidance=0")
    prior = train_pixelcnn(params, codes_dir, tmp_path / "pixelcnn")
    assert json.loads((prior / "conditions.json").read_text())["names"] == []

    out = _generate(params, vqvae_dir, prior, tmp_path / "samples")
    assert list(pd.read_csv(out / "labels.csv").columns) == ["file"]
    np.testing.assert_allclose(load_conditions(out / "dataset", "train")["slice_level"], 0.5)
    with pytest.raises(ConfigError, match="generate.conditions.cdr: the PixelCNN was not"):
        _generate(_params("generate.conditions.cdr=0", "generate.guidance=0"), vqvae_dir, prior,
                  tmp_path / "x")  # fmt: skip
    with pytest.raises(ConfigError, match="generate.guidance: the PixelCNN is unconditional"):
        _generate(_params("generate.guidance=1"), vqvae_dir, prior, tmp_path / "y")


def test_guidance_needs_condition_dropout(codes_dir, vqvae_dir, tmp_path):
    from oasis_vqvae.stages.train_pixelcnn import train_pixelcnn

    params = _params("pixelcnn.conditions=[cdr]", "pixelcnn.condition_dropout=0",
                     "pixelcnn.epochs=1", "generate.guidance=0")  # fmt: skip
    prior = train_pixelcnn(params, codes_dir, tmp_path / "pixelcnn")
    with pytest.raises(ConfigError, match="generate.guidance: .*condition_dropout 0"):
        _generate(_params("generate.guidance=1"), vqvae_dir, prior, tmp_path / "s")
