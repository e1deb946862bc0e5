"""Hardware profiles (prices are data), detection of this machine, and the hardware gate."""

from __future__ import annotations

import functools
import os
import platform
import time
from dataclasses import dataclass, field, replace

from core.errors import ConfigError, HardwareMismatch

HF_PRICING = "Hugging Face Inference Endpoints pricing page"
#: the reserved rate behind the cost column of AWS's inf2 performance tables: their
#: inf2_instance_prices.csv "RI-Effective hourly rate" for Inf2.xlarge (on demand there: $0.758)
AWS_NEURON_INF2_RI = (
    "AWS Neuron docs, 'Inf2 Inference Performance' (awsdocs-neuron.readthedocs-hosted.com/en/"
    "latest/general/benchmarks/inf2/inf2-performance.html): its cost column uses "
    "inf2_instance_prices.csv's 'RI-Effective hourly rate' for Inf2.xlarge, $0.328 (on-demand "
    "$0.758); the page's three encoder costs reproduce at it"
)
#: how a price is paid: list price by the hour, a 1- or 3-year commitment, or interruptible capacity
PRICE_BASES = ("on-demand", "reserved", "spot")


@dataclass(frozen=True)
class Price:
    """One published $/hr on one price basis, with where and when it was published."""

    per_hour: float
    source: str
    date: str

    def __post_init__(self) -> None:
        if not self.per_hour > 0:
            raise ConfigError(f"a price must be > 0 $/hr, got {self.per_hour!r} ({self.source})")

    def describe(self) -> str:
        return f"{self.source} ({self.date})"


#: Ray resources that mark a node as an accelerator node: such a node is never selected as `cpu`
ACCELERATORS = ("GPU", "neuron_cores")


@dataclass(frozen=True)
class HardwareProfile:
    """One hardware type. Peaks are dense (no structured sparsity), per accelerator."""

    name: str
    device: str  # cpu | cuda | neuron
    price_per_hour: float | None
    price_source: str
    price_date: str
    peak_fp16_flops: float | None  # dense fp16/bf16 tensor-core (or equivalent) peak
    peak_fp32_flops: float | None
    mem_bandwidth_gbs: float | None
    compute_capability: tuple[int, int] | None = None
    capabilities: frozenset[str] = field(default_factory=frozenset)  # fp16, bf16
    match: tuple[str, ...] = ()  # substrings of the device name that identify it
    peak_source: str = "vendor datasheet (dense)"
    # the other price bases; None where no published figure was found (never estimated)
    reserved: Price | None = None
    spot: Price | None = None

    def __post_init__(self) -> None:
        if self.price_per_hour is not None and self.price_per_hour <= 0:
            raise ConfigError(f"price for {self.name} must be > 0, got {self.price_per_hour}")

    def price(self, basis: str = "on-demand") -> Price | None:
        """The $/hr on a price basis (on-demand is `price_per_hour`); None when not published."""
        if basis not in PRICE_BASES:
            raise ConfigError(f"price basis must be one of {', '.join(PRICE_BASES)}; got {basis!r}")
        if basis == "on-demand":
            if self.price_per_hour is None:
                return None
            return Price(self.price_per_hour, self.price_source, self.price_date)
        return self.reserved if basis == "reserved" else self.spot

    @property
    def flash_attention_2(self) -> bool:
        cc = self.compute_capability
        return self.device == "cuda" and cc is not None and cc >= (8, 0)

    def peak_flops(self, precision: str) -> float | None:
        return self.peak_fp32_flops if precision == "fp32" else self.peak_fp16_flops

    @property
    def ray_resources(self) -> dict[str, float]:
        """The Ray node resources that select this hardware (what Ray puts on such nodes)."""
        if self.device == "cuda" and self.match:
            return {"GPU": 1, f"accelerator_type:{self.match[0]}": 0.001}
        if self.device == "neuron":
            return {"neuron_cores": 1}
        return {"CPU": 1}


T = 1e12
PROFILES: dict[str, HardwareProfile] = {
    p.name: p
    for p in (
        # CPU peak is measured on the machine at run time (see measured_cpu_peak)
        HardwareProfile(
            "cpu",
            "cpu",
            0.067,
            HF_PRICING + " (intel-spr, 2 vCPU)",
            "2025-06",
            None,
            None,
            None,
            capabilities=frozenset({"bf16", "int8"}),
            peak_source="measured matmul",
        ),
        HardwareProfile(
            "t4",
            "cuda",
            0.50,
            HF_PRICING,
            "2025-06",
            65 * T,
            8.1 * T,
            320,
            (7, 5),
            frozenset({"fp16"}),
            ("T4",),
        ),
        HardwareProfile(
            "l4",
            "cuda",
            0.80,
            HF_PRICING,
            "2025-06",
            121 * T,
            30.3 * T,
            300,
            (8, 9),
            frozenset({"fp16", "bf16"}),
            ("L4",),
        ),
        HardwareProfile(
            "a10g",
            "cuda",
            1.00,
            HF_PRICING,
            "2025-06",
            70 * T,
            31.2 * T,
            600,
            (8, 6),
            frozenset({"fp16", "bf16"}),
            ("A10G",),
        ),
        HardwareProfile(
            "a100",
            "cuda",
            2.50,
            HF_PRICING,
            "2025-06",
            312 * T,
            19.5 * T,
            1935,
            (8, 0),
            frozenset({"fp16", "bf16"}),
            ("A100",),
        ),
        HardwareProfile(
            "h100",
            "cuda",
            4.50,
            HF_PRICING,
            "2025-06",
            989 * T,
            67 * T,
            3350,
            (9, 0),
            frozenset({"fp16", "bf16"}),
            ("H100",),
        ),
        HardwareProfile(
            "h200",
            "cuda",
            5.00,  # aws nvidia-h200 x1 on the same pricing page
            HF_PRICING,
            "2025-11",
            989 * T,
            67 * T,
            4800,
            (9, 0),
            frozenset({"fp16", "bf16"}),
            ("H200",),
        ),
        HardwareProfile(
            "inf2",
            "neuron",
            0.75,
            HF_PRICING,
            "2025-06",
            190 * T,
            47.5 * T,
            820,
            None,
            frozenset({"fp16", "bf16"}),
            ("inferentia2", "inf2"),
            reserved=Price(0.328, AWS_NEURON_INF2_RI, "2024-09-16"),
        ),
    )
}
# AWS on-demand list price (us-east-1), as AWS's neuronperf cost tables use it
AWS_INF2_XLARGE = 0.7582


@dataclass(frozen=True)
class Detected:
    """What this machine is, read once by the CLI and recorded with every result."""

    profile: str | None  # a PROFILES key, or None for an unknown accelerator
    device: str
    device_name: str
    cpu_name: str
    cores: int
    cpu_isa: tuple[str, ...] = ()  # the matrix-unit and vector ISA extensions (cpu_isa())

    def describe(self) -> str:
        return f"{self.profile or 'unknown'} ({self.device_name})"

    @property
    def amx_bf16(self) -> bool:
        return "amx_bf16" in self.cpu_isa


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


#: the CPU flags that decide which precisions run on matrix units (Linux /proc/cpuinfo names)
ISA_FLAGS = (
    "avx2", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_tile", "amx_bf16",
    "amx_int8", "amx_fp16",
)  # fmt: skip


def cpu_isa(cpuinfo: str | None = None) -> tuple[str, ...]:
    """Which of ISA_FLAGS this CPU has (AVX-512, VNNI, AMX-BF16, AMX-INT8, ...), in that order;
    () where /proc/cpuinfo is not readable."""
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo") as f:
                cpuinfo = f.read()
        except OSError:
            return ()
    flags: set[str] = set()
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            break
    return tuple(f for f in ISA_FLAGS if f in flags)


def has_cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def sm_at_least(major: int, minor: int) -> bool:
    if not has_cuda():
        return False
    import torch

    return torch.cuda.get_device_capability() >= (major, minor)


def has_neuron() -> bool:
    return os.path.exists("/dev/neuron0")


def has_tensorrt() -> bool:
    import importlib.util

    return importlib.util.find_spec("tensorrt") is not None and has_cuda()


def detect() -> Detected:
    cores = os.cpu_count() or 1
    cpu = cpu_name()
    if has_cuda():
        import torch

        name = torch.cuda.get_device_name(0)
        for p in PROFILES.values():
            if p.device == "cuda" and any(m.lower() in name.lower() for m in p.match):
                return Detected(p.name, "cuda", name, cpu, cores, cpu_isa())
        return Detected(None, "cuda", name, cpu, cores, cpu_isa())
    if has_neuron():
        return Detected("inf2", "neuron", "AWS Inferentia2", cpu, cores, cpu_isa())
    return Detected("cpu", "cpu", f"{cpu} ({cores} cores)", cpu, cores, cpu_isa())


def resolve(hw: str, detected: Detected, price_per_hour: float | None = None) -> HardwareProfile:
    """The profile a run is labelled with. Refuses to label a run as hardware it is not on."""
    if hw != "auto" and hw not in PROFILES:
        raise ConfigError(f"unknown --hw {hw!r}; choose one of: auto, {', '.join(PROFILES)}")
    if hw == "auto":
        if detected.profile is None:
            if price_per_hour is None:
                raise ConfigError(
                    f"detected {detected.device_name}, which has no hardware profile or price; "
                    "pass --price-per-hour (cost is never reported as $0)"
                )
            return HardwareProfile(
                detected.device_name.lower().replace(" ", "-"),
                detected.device,
                price_per_hour,
                "--price-per-hour",
                time.strftime("%Y-%m-%d"),
                None,
                None,
                None,
            )
        hw = detected.profile
    if hw != detected.profile:
        raise HardwareMismatch(
            f"--hw {hw} does not match this machine: detected {detected.describe()}; "
            f"run on {hw} hardware or pass --hw auto"
        )
    profile = PROFILES[hw]
    if price_per_hour is not None:
        if price_per_hour <= 0:
            raise ConfigError(f"--price-per-hour must be > 0, got {price_per_hour}")
        profile = replace(
            profile,
            price_per_hour=price_per_hour,
            price_source="--price-per-hour",
            price_date=time.strftime("%Y-%m-%d"),
        )
    return profile


def check_options(profile: HardwareProfile, precision: str, attn: str) -> None:
    """Refuse precisions and attention kernels the hardware cannot run, saying why."""
    if precision != "fp32" and precision not in profile.capabilities:
        alt = "bf16" if "bf16" in profile.capabilities else "fp32"
        raise HardwareMismatch(
            f"--hw {profile.name} does not support --precision {precision}; use --precision {alt}"
        )
    if attn == "flash_attention_2" and not profile.flash_attention_2:
        raise HardwareMismatch(
            f"--hw {profile.name} cannot run flash-attention-2 (needs compute capability ≥ 8.0); "
            "use --attn sdpa"
        )


def _best_rate(step, ops: float, seconds: float, warm: bool = True) -> float:
    """The highest ops/s over single timed calls of `step` (after one warm-up call unless
    `warm` is False) until `seconds` have passed; at least one timed call, so a slow kernel
    costs two calls, not seven."""
    if warm:
        step()
    best = 0.0
    deadline = time.perf_counter() + seconds
    while True:
        t0 = time.perf_counter()
        step()
        t1 = time.perf_counter()
        best = max(best, ops / max(t1 - t0, 1e-9))
        if t1 >= deadline:
            return best


def _float_matmul(precision: str, n: int):
    import torch

    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    a = torch.randn(n, n, dtype=dtype)
    b = torch.randn(n, n, dtype=dtype)
    return lambda: a @ b


def _int8_matmuls(n: int) -> list:
    """int8 x int8 -> int32 matmuls this machine can run: torch._int_mm and, where installed,
    ONNX Runtime's MatMulInteger (the kernel family its int8 graphs use)."""
    import numpy as np
    import torch

    steps = []
    a = torch.randint(-128, 128, (n, n), dtype=torch.int8)
    b = torch.randint(-128, 128, (n, n), dtype=torch.int8)
    try:
        torch._int_mm(a, b)
        steps.append(lambda: torch._int_mm(a, b))
    except (RuntimeError, AttributeError):  # no CPU kernel in this torch build
        pass
    try:
        import onnxruntime as ort
        from onnx import TensorProto, helper
    except ImportError:
        return steps
    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["a", "b"], ["y"])],
        "int8_peak",
        [
            helper.make_tensor_value_info("a", TensorProto.UINT8, [n, n]),
            helper.make_tensor_value_info("b", TensorProto.INT8, [n, n]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.INT32, [n, n])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    feeds = {"a": np.random.randint(0, 256, (n, n), dtype=np.uint8), "b": b.numpy()}
    steps.append(lambda: sess.run(None, feeds))
    return steps


@functools.lru_cache(maxsize=4)
def measured_cpu_peak(precision: str = "fp32", seconds: float = 2.0, rounds: int = 3) -> float:
    """This machine's sustained matmul op/s (all threads), the CPU roofline peak.

    fp32/bf16: torch matmul. int8: the fastest int8 matmul kernel found (see `_int8_matmuls`),
    so an int8 row is held to an int8 peak. On a shared host a round can run slow; the peak is
    the best of `rounds` rounds, a short pause apart, and of every kernel tried (a kernel at
    under a quarter of the best after the first round is not timed again: torch's reference
    int8 kernel takes a second a call where ONNX Runtime's takes 25 ms).
    """
    n = 1024
    steps = _int8_matmuls(n) if precision == "int8" else [_float_matmul(precision, n)]
    if not steps:
        steps = [_float_matmul("fp32", n)]
    rates = [0.0] * len(steps)
    for r in range(max(rounds, 1)):
        if r:
            time.sleep(0.1)
        for i, step in enumerate(steps):
            if r == 0 or rates[i] >= max(rates) / 4:
                rate = _best_rate(step, 2 * n**3, seconds / (rounds * len(steps)), warm=not r)
                rates[i] = max(rates[i], rate)
    return max(rates)
