import pytest

from core.errors import ConfigError, HardwareMismatch
from harness import hardware
from harness.hardware import PROFILES, Detected

CPU = Detected("cpu", "cpu", "Test CPU (2 cores)", "Test CPU", 2)
L4 = Detected("l4", "cuda", "NVIDIA L4", "Test CPU", 8)
ODD = Detected(None, "cuda", "NVIDIA RTX 9999", "Test CPU", 8)


def test_profiles_have_prices_sources_and_capabilities():
    for name in ("cpu", "t4", "l4", "a10g", "a100", "h100", "inf2"):
        p = PROFILES[name]
        assert p.price_per_hour > 0 and p.price_source and p.price_date
    assert PROFILES["l4"].price_per_hour == 0.80 and PROFILES["t4"].price_per_hour == 0.50
    assert not PROFILES["t4"].flash_attention_2  # compute capability 7.5
    assert PROFILES["l4"].flash_attention_2 and PROFILES["h100"].flash_attention_2
    assert PROFILES["h100"].peak_flops("bf16") > PROFILES["h100"].peak_flops("fp32")


def test_hw_mismatch_says_what_was_detected():
    with pytest.raises(HardwareMismatch, match=r"--hw l4 does not match.*detected cpu \(Test CPU"):
        hardware.resolve("l4", CPU)


def test_auto_and_explicit_match():
    assert hardware.resolve("auto", CPU).name == "cpu"
    assert hardware.resolve("l4", L4).name == "l4"


def test_unknown_hw_name_lists_choices():
    with pytest.raises(ConfigError, match="choose one of: auto, cpu, t4"):
        hardware.resolve("tpu", CPU)


def test_unknown_gpu_needs_a_price_never_zero():
    with pytest.raises(ConfigError, match="--price-per-hour"):
        hardware.resolve("auto", ODD)
    p = hardware.resolve("auto", ODD, price_per_hour=1.25)
    assert p.price_per_hour == 1.25 and p.price_source == "--price-per-hour"


def test_price_override_is_recorded():
    p = hardware.resolve("auto", CPU, price_per_hour=0.5)
    assert p.price_per_hour == 0.5 and p.price_source == "--price-per-hour"
    with pytest.raises(ConfigError):
        hardware.resolve("auto", CPU, price_per_hour=0.0)


def test_capability_gate_messages():
    with pytest.raises(HardwareMismatch, match=r"t4 cannot run flash-attention-2.*use --attn sdpa"):
        hardware.check_options(PROFILES["t4"], "fp16", "flash_attention_2")
    with pytest.raises(
        HardwareMismatch, match="does not support --precision bf16; use --precision fp32"
    ):
        hardware.check_options(PROFILES["t4"], "bf16", "sdpa")
    with pytest.raises(HardwareMismatch, match="--precision fp16"):
        hardware.check_options(PROFILES["cpu"], "fp16", "sdpa")
    hardware.check_options(PROFILES["l4"], "bf16", "flash_attention_2")
    hardware.check_options(PROFILES["cpu"], "bf16", "sdpa")


def test_detect_this_machine_is_consistent():
    d = hardware.detect()
    assert d.cores >= 1 and d.device in ("cpu", "cuda", "neuron")
    assert hardware.resolve("auto", d) is not None or d.profile is None


def test_measured_cpu_peak_is_positive():
    assert hardware.measured_cpu_peak("fp32", 0.2) > 1e9
