"""Target -> Setup: model spec, engine class, hardware profile, workload, FLOPs and peak.

Every benchmark command resolves its target here before measuring, so the checks (task vs model,
engine vs hardware, missing libraries) and the roofline inputs are the same for all of them.
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import asdict, dataclass, replace
from typing import Any

from core.errors import ArtifactRefused, ConfigError, HardwareMismatch, MissingDependency
from engines.artifact import Manifest, verify
from engines.base import EngineConfig, check_task, fields_from
from engines.models import get_spec, load_tokenizer
from engines.models.auto import folder_disagrees
from engines.registry import create_engine, engine_class
from engines.vision import describe_buckets
from exporters.api import artifact_dir, ensure_artifact, expectation
from exporters.base import ExportConfig, holds_buckets
from exporters.parity import compare_on_texts, eager_reference
from harness import hardware
from harness.config import TargetConfig
from harness.results import context_columns
from workloads import WorkloadSpec, load_workload, workload_buckets

log = logging.getLogger("billionbench")


def workload_spec(workload: WorkloadSpec, spec: Any, target: TargetConfig) -> WorkloadSpec:
    """The workload for this model: its task, the target's seed and, for images, its resize
    budget (a text workload carries no image fields, so its identity does not either)."""
    if spec.task != "vision-embedding":
        return replace(
            workload, task=spec.task, seed=target.seed, image_sizes=(), image_column=None
        )
    return replace(
        workload,
        task=spec.task,
        seed=target.seed,
        min_pixels=target.engine_options.get("min_pixels"),
        max_pixels=target.engine_options.get("max_pixels"),
    )


@dataclass(frozen=True)
class Resolved:
    """A validated target: the model, the engine and its config, and the hardware it runs on."""

    target: TargetConfig
    spec: Any
    engine_cls: Any
    profile: Any
    detected: Any
    engine_cfg: EngineConfig

    @property
    def max_len(self) -> int:
        return self.engine_cfg.max_seq_len or self.spec.max_seq_len


def resolve_setup(target: TargetConfig) -> Resolved:
    """Validate the target (one-line errors) and build the engine config.

    `--model-path` alone names the model (a folder); without `--task` the model's own task is
    used.
    """
    model = target.names_model
    spec = get_spec(model)
    task = target.task or spec.task
    if target.model and target.model_path and not spec.source:
        differs = folder_disagrees(spec, target.model_path)
        if differs:
            log.warning("%s", differs)
    if spec.task != task:
        raise ConfigError(
            f"--model {model} is a {spec.task} model but --task is {task}; "
            f"pass --task {spec.task} or pick a {task} model"
        )
    engine_cls = engine_class(target.engine)  # unknown engines fail here
    check_task(target.engine, engine_cls, spec)

    detected = hardware.detect()
    profile = hardware.resolve(target.hw, detected, target.price_per_hour)
    _check_engine_here(target.engine, engine_cls, profile, detected)
    hardware.check_options(profile, target.precision, target.attn)
    engine_cfg = fields_from(
        EngineConfig,
        target,
        model=spec.ref,  # a folder as an absolute path, so artifacts and rows agree on it
        device=profile.device,
        artifact=None,  # set once the artifact is prepared
        options=engine_cls.Options.from_values(target.engine_options),
    )
    engine_cls.preflight(engine_cfg)
    return Resolved(target, spec, engine_cls, profile, detected, engine_cfg)


@dataclass(frozen=True)
class Setup(Resolved):
    """What every benchmark command resolves before measuring: flags, workload, roofline."""

    wl_spec: Any
    tokenizer: Any  # engines.models.LoadedTokenizer
    workload: Any
    flops: float | None  # useful FLOPs per input; None for engines that compute nothing
    peak: float | None  # FLOP/s: measured on CPU, the profile's datasheet figure elsewhere

    def identity(self, mode: str) -> dict[str, Any]:
        """What every point's config_key holds: mode, engine, hardware, price, workload."""
        return {
            "mode": mode,
            "engine": self.engine_cfg.as_dict(),
            "hw": self.profile.name,
            "price": self.profile.price_per_hour,
            "workload": asdict(self.wl_spec),
        }

    def context(
        self, info: dict[str, Any], inputs_per_sec: float, parity_metric: str | None = None
    ) -> dict[str, Any]:
        """The columns every row carries: where, on what, at which price, and the cost."""
        return context_columns(
            spec=self.spec,
            engine_cfg=self.engine_cfg,
            info=info,
            profile=self.profile,
            detected=self.detected,
            workload=self.workload,
            flops=self.flops,
            peak=self.peak,
            inputs_per_sec=inputs_per_sec,
            parity_metric=parity_metric,
        )

    def describe(self) -> list[str]:
        """The run's header: model, engine, hardware and price; workload and roofline inputs."""
        spec, profile, stats = self.spec, self.profile, self.workload.stats
        cfg = self.engine_cfg
        peak = (
            f"{self.peak / 1e12:.2f} TFLOP/s ({profile.peak_source})"
            if self.peak
            else "not measured"
        )
        lines = [
            f"[bold]billionbench[/] · model [cyan]{spec.name}[/] ({spec.hub_id or spec.source or 'config only'})"
            f" · engine [cyan]{cfg.engine}[/] {cfg.precision}/{cfg.attn} · hw "
            f"[cyan]{profile.name}[/] = {self.detected.device_name} at "
            f"${profile.price_per_hour}/hr ({profile.price_source}, {profile.price_date})",
            f"workload: {self.workload.source}, tokenizer {self.tokenizer.source}; tokens/input "
            f"avg {stats.avg:.1f} p50 {stats.p50:.0f} min {stats.min} max {stats.max} · "
            f"{(self.flops or 0) / 1e9:.2f} GFLOP/input · peak {peak}",
        ]
        if self.workload.visual_tokens is not None:
            budget = cfg.options.pixel_budget()
            lines.append(
                f"images: {self.workload.pixels.mean():,.0f} pixels avg, "
                f"{self.workload.visual_tokens.mean():.1f} visual tokens avg "
                f"(min/max pixels {budget.min_pixels:,}/{budget.max_pixels:,}), "
                f"skipped {self.workload.skipped}"
            )
        if not self.engine_cls.computes_model:
            lines.append(
                f"[yellow]engine={cfg.engine}: synthetic latencies for tests/demos, "
                "not a model measurement[/]"
            )
        return lines


def load_setup(target: TargetConfig, workload: WorkloadSpec) -> Setup:
    """resolve_setup + tokenizer + workload + FLOPs per input + peak, shared by the commands."""
    r = resolve_setup(target)
    spec, engine_cls, profile, max_len = r.spec, r.engine_cls, r.profile, r.max_len
    wl_spec = workload_spec(workload, spec, target)
    tok = load_tokenizer(spec, target.model_path, r.engine_cfg.trust_remote_code)
    loaded = load_workload(wl_spec, tok.tokenizer, max_len)
    if loaded.truncated:
        log.warning(
            "%d inputs are longer than %d tokens and will be truncated", loaded.truncated, max_len
        )
    stats = loaded.stats
    # the fake engine computes nothing, so no FLOPs, floor or efficiency is claimed for it
    computes = engine_cls.computes_model
    flops = spec.flops_per_input(stats.avg, stats.mean_sq, **loaded.flop_args) if computes else None
    peak = (
        hardware.measured_cpu_peak(target.precision)
        if profile.device == "cpu" and computes
        else profile.peak_flops(target.precision)
    )
    return fields_from(
        Setup, r, wl_spec=wl_spec, tokenizer=tok, workload=loaded, flops=flops, peak=peak
    )


def artifact_shapes(setup: Setup, batch_sizes: tuple[int, ...]) -> dict[str, Any]:
    """The batch/sequence profile (and vision buckets) an exported artifact must hold."""
    stats, max_len = setup.workload.stats, setup.max_len
    batches = sorted(set(batch_sizes))
    lo = min(8, stats.min)
    shapes: dict[str, Any] = dict(
        batch_range=(batches[0], batches[len(batches) // 2], batches[-1]),
        seq_range=(lo, max(lo, min(int(stats.p50), max_len)), max_len),
    )
    if setup.spec.task == "vision-embedding" and setup.engine_cls.fixed_image_buckets:
        budget = setup.engine_cfg.options.pixel_budget()
        shapes["image_buckets"] = workload_buckets(setup.workload.texts, budget, batch_sizes)
    return shapes


def check_target(target: TargetConfig) -> None:
    """Whether engine x hardware x precision can run anywhere: resolve_setup's checks without
    this machine (a cluster's driver need not have the hardware it targets)."""
    if target.hw not in hardware.PROFILES:
        raise ConfigError(
            f"unknown --hw {target.hw!r}; choose one of: {', '.join(hardware.PROFILES)}"
        )
    engine_cls = engine_class(target.engine)
    check_task(target.engine, engine_cls, get_spec(target.names_model))
    profile = hardware.PROFILES[target.hw]
    if profile.device not in engine_cls.devices:
        raise HardwareMismatch(
            f"--engine {target.engine} runs on {'/'.join(engine_cls.devices)}, not on "
            f"{target.hw} ({profile.device})"
        )
    hardware.check_options(profile, target.precision, target.attn)


def _check_engine_here(name, engine_cls, profile, detected) -> None:
    """Fail fast, in one line, when the engine's hardware or libraries are not here."""
    missing = [(m, x) for m, x in engine_cls.requires if importlib.util.find_spec(m) is None]
    hint = f"; {engine_cls.install_hint}" if engine_cls.install_hint else ""
    if profile.device not in engine_cls.devices:
        also = ""
        if missing:
            also = f" and {', '.join(m for m, _ in missing)} is not installed"
        raise HardwareMismatch(
            f"--engine {name} runs on {'/'.join(engine_cls.devices)}, but this machine is "
            f"{detected.describe()}{also}{hint}"
        )
    if missing:
        raise MissingDependency(missing[0][0], missing[0][1])


@dataclass(frozen=True)
class Prepared:
    """An artifact ready to benchmark: the engine config that points at it, and its manifest."""

    engine_cfg: EngineConfig
    manifest: Manifest
    reused: bool
    #: the gate again on the run's own texts (None: not run, e.g. images or no texts given)
    on_data: dict[str, Any] | None = None

    @property
    def parity(self) -> dict[str, Any]:
        return self.manifest.parity or {}

    @property
    def parity_metric(self) -> str:
        fixed = self.parity.get("metric") or self.manifest.verdict
        if not self.on_data:
            return fixed
        d = self.on_data
        return f"{fixed}; run's data ({d['n']} inputs): {d['metric']}, margin {d['margin']:+.4f}"

    @property
    def margin(self) -> float | None:
        """How far the run's worst input is from failing the gate (None: not checked)."""
        return self.on_data.get("margin") if self.on_data else None


#: inputs of the run's own workload the parity gate is checked on again, every run
DATA_PARITY_INPUTS = 64


def data_parity(setup: Resolved, engine_cfg: EngineConfig, texts: list[str]) -> dict | None:
    """The parity gate on a sample of the run's own texts (an artifact that passed on other
    data may not pass on these); None where it does not apply (images, no model)."""
    if setup.spec.multi_vector or not setup.engine_cls.computes_model or not texts:
        return None
    step = max(1, len(texts) // DATA_PARITY_INPUTS)
    sample = list(texts[::step][:DATA_PARITY_INPUTS])
    with create_engine(eager_reference(engine_cfg)) as ref, create_engine(engine_cfg) as cand:
        return compare_on_texts(ref, cand, engine_cfg.precision, sample)


def with_artifact(setup: Setup, console, batch_sizes: tuple[int, ...]):
    """(setup, parity metric, parity margin) for a run at `batch_sizes`: the setup as it is when
    its engine needs no artifact, else pointed at one exported (or reused) for those batch sizes
    and checked on the run's own texts."""
    if not setup.engine_cls.needs_artifact(setup.engine_cfg):
        return setup, None, None
    prepared = prepare_artifact(
        setup,
        console=console,
        texts=setup.workload.texts,
        **artifact_shapes(setup, batch_sizes),
    )
    return replace(setup, engine_cfg=prepared.engine_cfg), prepared.parity_metric, prepared.margin


def prepare_artifact(
    setup: Resolved,
    *,
    batch_range=(1, 8, 32),
    seq_range=None,
    image_buckets=(),
    console,
    fmt: str | None = None,
    variant: str | None = None,
    exporter=None,
    expect: dict[str, Any] | None = None,
    texts: list[str] | None = None,
) -> Prepared:
    """Reuse or export the artifact an engine runs (`--artifact` is verified, never
    overwritten), and apply the parity gate unless `--skip-parity`.

    `image_buckets`: the fixed (batch, grid h, grid w) buckets a vision ONNX run needs;
    `expect`: the manifest fields a user's `--artifact` must carry (default: the export's);
    `texts`: the run's own inputs, on a sample of which the gate is checked again.
    """
    engine_cfg, target = setup.engine_cfg, setup.target
    fmt = fmt or setup.engine_cls.artifact_format
    max_len = setup.max_len
    cfg = fields_from(
        ExportConfig,
        engine_cfg,
        format=fmt,
        out=target.artifact or "",
        variant=engine_cfg.variant if variant is None else variant,
        hw=setup.profile.name,
        batch_range=tuple(batch_range),
        seq_range=tuple(seq_range or (min(8, max_len), min(128, max_len), max_len)),
        image_buckets=tuple(image_buckets),
    )
    if target.artifact:
        trust = engine_cfg.trust_artifact
        manifest, reused = verify(cfg.out, expect or expectation(cfg), trust=trust), True
        if image_buckets and not holds_buckets(manifest, image_buckets):
            raise ArtifactRefused(
                f"artifact {cfg.out} lacks image buckets this run needs "
                f"({describe_buckets(image_buckets)}); export them with python -m harness.export "
                "--format onnx --image-buckets ..."
            )
    else:
        cfg = replace(cfg, out=str(artifact_dir(target.artifacts_dir, cfg)))
        with console.status(f"preparing the {fmt} artifact in {cfg.out} ..."):
            manifest, reused = ensure_artifact(cfg, exporter)
    prepared = Prepared(replace(engine_cfg, artifact=cfg.out), manifest, reused)
    parity = prepared.parity
    how = "reused" if reused else f"exported in {manifest.export_seconds} s"
    verdict = manifest.verdict
    if not manifest.sealed:
        verdict += " (claimed by an unsealed manifest)"
    console.print(
        f"artifact: {cfg.out} ({how}); parity vs eager fp32 {verdict} {parity.get('metric', '')}",
        highlight=False,
    )
    if not manifest.sealed and not engine_cfg.trust_artifact and not target.skip_parity:
        raise ArtifactRefused(
            f"artifact {cfg.out}: its manifest is not sealed by this machine's key (exported "
            "elsewhere, or edited since), so its parity result cannot be believed; re-export it "
            "here, or pass --trust-artifact if you trust where it came from"
        )
    if parity.get("passed") is not True and not target.skip_parity:
        why = "; ".join(parity.get("failures", [])) or parity.get("skipped", "no parity result")
        raise ArtifactRefused(
            f"artifact {cfg.out} did not pass parity ({why}); re-export it, or pass "
            "--skip-parity to benchmark it anyway"
        )
    on_data = None if target.skip_parity else data_parity(setup, prepared.engine_cfg, texts or [])
    if on_data is not None:
        verdict = "passed" if on_data["passed"] else "FAILED"
        console.print(
            f"parity on {on_data['n']} of this run's inputs: {verdict} {on_data['metric']} "
            f"(margin to the gate {on_data['margin']:+.4f})",
            highlight=False,
        )
        if not on_data["passed"]:
            raise ArtifactRefused(
                f"artifact {cfg.out} passed parity on its fixed inputs but not on this run's "
                f"({on_data['metric']}); its rows would not be comparable: pass --skip-parity "
                "to benchmark it anyway"
            )
        prepared = replace(prepared, on_data=on_data)
    return prepared
