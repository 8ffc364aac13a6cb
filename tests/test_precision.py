"""Choosing the training precision: explicit names pass through, auto reads the hardware."""

import pytest

from oasis_vqvae.precision import cpu_flags, native_policy, resolve_precision

CPUINFO = """processor\t: 0
vendor_id\t: GenuineIntel
flags\t\t: fpu sse2 avx2 avx512f {extra}
bugs\t\t: spectre_v1
"""


@pytest.mark.parametrize("name", ["float32", "mixed_bfloat16", "mixed_float16"])
def test_explicit_precision_is_used_as_is(name):
    assert resolve_precision(name) == name


def test_cpu_flags_come_from_cpuinfo(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(CPUINFO.format(extra="avx512_bf16"))
    assert {"avx2", "avx512_bf16"} <= cpu_flags(cpuinfo)
    assert "spectre_v1" not in cpu_flags(cpuinfo)  # bugs are not features
    assert cpu_flags(tmp_path / "missing") == frozenset()  # macOS, Windows: float32


@pytest.mark.parametrize(
    "gpus, flags, policy",
    [
        ([(8, 0), (9, 0)], frozenset(), "mixed_bfloat16"),  # A100, H100
        ([(7, 5)], frozenset({"avx512_bf16"}), "mixed_float16"),  # T4: the GPU decides
        ([(8, 6), (7, 0)], frozenset(), "mixed_float16"),  # the oldest GPU decides
        ([(6, 1)], frozenset(), "float32"),  # P4: no tensor cores
        ([], frozenset({"avx2", "avx512_bf16"}), "mixed_bfloat16"),
        ([], frozenset({"avx2", "amx_bf16"}), "mixed_bfloat16"),
        ([], frozenset({"avx2", "avx512f"}), "float32"),
    ],
)
def test_native_policy(gpus, flags, policy):
    assert native_policy(gpus, flags) == policy


def test_auto_on_a_cpu_machine_reads_its_flags():
    import tensorflow as tf

    if tf.config.list_physical_devices("GPU"):
        pytest.skip("a GPU decides here")
    assert resolve_precision("auto") == native_policy([], cpu_flags())
