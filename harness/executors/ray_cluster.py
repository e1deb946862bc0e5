"""The Ray executor: a command's targets (hardware x engine x precision) measured on a cluster.

Each hardware profile names the Ray resources that select its nodes; one actor per selected
node holds the node's whole device and measures one point at a time (harness.executors.node).
The runner's one loop, in this process, plans every target, resumes, shows progress per hardware
and writes every row; this executor only runs the points it is handed, with Ray's own means:
`submit(scenario, point)` calls an actor of the point's hardware (`.remote()`: Ray queues the
call on that actor) and hands back the call's ObjectRef as a future. A point whose node dies
(Ray fails every call queued on its actor) is sent once to another node of the same hardware,
else handed back as failed with the reason. Each target's plan is built on one of its nodes
and read from there (`RemoteScenario`); a target that no node can build is one failed row. We
schedule nothing ourselves beyond choosing the least busy actor: no thread, no queue; Ray places
the actors, on the nodes its resources name, and queues their calls.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import tarfile
import threading
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from analysis.console_tables import best_row
from core.environment import var
from core.errors import BillionbenchError, ConfigError, MissingDependency
from harness import hardware, runner
from harness.config import ExecutorConfig, OutputConfig, TargetConfig
from harness.executors.node import Build, NodeWorker, Reply, failed
from harness.hardware import ACCELERATORS
from harness.runner import Executor, Measurement, Point, Progress, Scenario, Unmeasurable
from harness.target import check_target

log = logging.getLogger("billionbench")


def import_ray():
    """ray, or the one-line error that names the install."""
    try:
        import ray
    except ImportError as e:
        raise MissingDependency("ray", "ray") from e
    return ray


def _failed_columns(target: TargetConfig) -> dict[str, str]:
    """What a failed point's row says about its target (hw_type stays empty: a row never
    claims hardware that no node detected)."""
    return {"engine": target.engine, "precision": target.precision}


def plan_targets(target: TargetConfig, console) -> list[TargetConfig]:
    """Every combination of the target lists that can run; the others are said once and skipped."""
    if "auto" in [t.hw for t in target.targets()]:
        raise ConfigError(
            "--executor ray needs --hw naming the hardware to run on (e.g. --hw cpu or "
            f"--hw t4,l4,inf2); choose from: {', '.join(hardware.PROFILES)}"
        )
    out = []
    for t in target.targets():
        try:
            check_target(t)
        except BillionbenchError as e:
            console.print(f"skipped {t.name}: {e}", highlight=False, markup=False)
            continue
        out.append(t)
    return out


def selectors(config: ExecutorConfig) -> dict[str, dict[str, float]]:
    """Which Ray resources select each hardware: the profiles', overridden by --ray-resources."""
    out = {name: p.ray_resources for name, p in hardware.PROFILES.items()}
    for item in config.ray_resources:
        hw, sep, blob = item.partition("=")
        try:
            res = json.loads(blob) if sep else None
        except json.JSONDecodeError:
            res = None
        ok = (
            isinstance(res, dict) and res and all(isinstance(v, (int, float)) for v in res.values())
        )
        if hw not in hardware.PROFILES or not ok:
            raise ConfigError(
                f"--ray-resources {item!r}: expected HW=JSON with HW one of "
                f"{', '.join(hardware.PROFILES)} and JSON an object of resource amounts, e.g. "
                'l4=\'{"GPU": 1, "L4": 1}\''
            )
        out[hw] = {k: float(v) for k, v in res.items()}
    return out


def select_nodes(nodes: list[dict], selector: dict[str, float], device: str) -> list[dict]:
    """The alive nodes that carry the selector's resources (a cpu target: no accelerator)."""
    out = []
    for n in nodes:
        res = n.get("Resources", {})
        if not n.get("Alive") or not all(res.get(k, 0) >= v for k, v in selector.items()):
            continue
        if device == "cpu" and any(res.get(a) for a in ACCELERATORS):
            continue
        out.append(n)
    return out


def connect(ray, config: ExecutorConfig, console) -> bool:
    """Join the cluster (--ray-address, $RAY_ADDRESS, then auto); with none, start a local one
    and say so. True when this process started or joined Ray (and so shuts it down)."""
    if ray.is_initialized():
        return False
    given = config.ray_address or var("RAY_ADDRESS")
    quiet = dict(logging_level=logging.WARNING, log_to_driver=bool(config.verbose))
    try:
        ray.init(address=given or "auto", **quiet)
    except ConnectionError as e:
        if given:
            raise ConfigError(f"no Ray cluster at --ray-address {given}: {e}") from e
        ray.init(include_dashboard=False, **quiet)
        console.print(
            "no Ray cluster found (RAY_ADDRESS unset, auto found none): started a local one on "
            "this machine",
            highlight=False,
        )
    return True


# --------------------------------------------------------------------------- one hardware
@dataclass
class Job:
    target: TargetConfig
    point: Point
    progress: Progress = lambda _text: None  # noqa: E731 - the runner's progress callback
    future: Future = field(default_factory=Future)
    tried: set[int] = field(default_factory=set)
    reasons: list[str] = field(default_factory=list)
    node: str | None = None  # where it was last sent


class Pool:
    """The actors of one hardware. A point is sent to the alive actor with the fewest points in
    flight (`.remote()`: Ray queues it in that actor's mailbox, and the actor measures one
    point at a time); its ObjectRef's future says when it is done. A point whose actor dies
    (Ray fails every call queued on it) or cannot build it is sent once to another."""

    def __init__(self, ray, hw: str, actors: list[tuple[Any, str]], done, started):
        self.ray, self.hw, self.done, self.started = ray, hw, done, started
        self.actors = actors  # (handle, node id)
        self.alive = set(range(len(actors)))
        self.load = [0] * len(actors)  # points in flight on each actor
        self.sent = [0] * len(actors)  # points ever sent to each (a tie goes to the least used)
        self.running: dict[Any, Job] = {}  # the ObjectRefs in flight: cancelled at close
        self.lock = threading.Lock()  # submit runs on the plans' threads, callbacks on Ray's
        self.closed = False

    def submit(self, job: Job) -> Future:
        self._send(job)
        return job.future

    def planner(self, exclude: set[int]) -> int | None:
        with self.lock:
            return min(self.alive - exclude, default=None)

    def lost(self, i: int) -> None:
        """Actor `i` is gone: no point is sent to it again."""
        with self.lock:
            self.alive.discard(i)

    def close(self) -> None:
        """Send nothing more, and cancel the points still queued on the actors."""
        with self.lock:
            self.closed = True
            refs = list(self.running)
        for ref in refs:
            with contextlib.suppress(Exception):  # finished or lost meanwhile: nothing to do
                self.ray.cancel(ref)

    def _pick(self, job: Job) -> int | None:
        with self.lock:
            free = self.alive - job.tried
            if self.closed or not free:
                return None
            i = min(free, key=lambda k: (self.load[k], self.sent[k], k))
            self.load[i] += 1
            self.sent[i] += 1
            return i

    def _send(self, job: Job) -> None:
        i = self._pick(job)
        if i is None:
            why = "; ".join(job.reasons) or f"no {self.hw} node is left in the cluster"
            self.done(job, failed(job.node, why, **_failed_columns(job.target)), "")
            return
        handle, job.node = self.actors[i]
        self.started(job)
        ref = handle.measure.remote(job.target.name, job.target, job.point)
        with self.lock:
            self.running[ref] = job
        # runs on Ray's thread when the reply is in (at once, if it is): it may send, never wait
        ref.future().add_done_callback(lambda f: self._landed(job, i, ref, f))

    def _landed(self, job: Job, i: int, ref, reply_future: Future) -> None:
        with self.lock:
            self.running.pop(ref, None)
            self.load[i] -= 1
        node = self.actors[i][1]
        try:
            reply: Reply = reply_future.result()
        except self.ray.exceptions.RayError as e:
            if self.closed:  # cancelled at close: the run is over
                job.future.set_exception(e)
                return
            self.lost(i)
            reply = Reply(error=f"node {node[:12]} was lost mid-point ({type(e).__name__})")
        if not reply.error:
            self.done(job, reply.value, reply.text)
            return
        job.tried.add(i)
        job.reasons.append(reply.error)
        if len(job.tried) < 2:
            self._send(job)  # to another alive actor; failed with the reasons if none is left
        else:
            self.done(job, failed(node, "; ".join(job.reasons), **_failed_columns(job.target)), "")


# --------------------------------------------------------------------------- the executor
class RayExecutor(Executor):
    """Runs each point on an actor of its target's hardware; this process writes the rows."""

    name = "ray"
    asynchronous = True

    def __init__(self, ray, config: ExecutorConfig, build: Build, console):
        self.ray, self.config, self.build, self.console = ray, config, build, console
        self.pools: dict[str, Pool] = {}
        self.lock = threading.Lock()

    def say(self, text: str, hw: str | None = None) -> None:
        with self.lock:
            for line in text.rstrip().splitlines():
                prefix = f"[{hw}] " if hw and len(self.pools) > 1 else ""
                self.console.print(prefix + line, highlight=False, markup=False, soft_wrap=True)

    def scenarios(self, targets: list[TargetConfig]) -> list[RemoteScenario]:
        """One actor per node each target's hardware selects (hardware with no node is said
        and skipped), and each target's scenario, planned on one of those nodes."""
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        sel, nodes = selectors(self.config), self.ray.nodes()
        actor = self.ray.remote(concurrency_groups={"plan": 1})(NodeWorker)
        kept = []
        for hw in dict.fromkeys(t.hw for t in targets):
            chosen = select_nodes(nodes, sel[hw], hardware.PROFILES[hw].device)
            if not chosen:
                for t in targets:
                    if t.hw == hw:
                        self.say(
                            f"skipped {t.name}: no node in the cluster has the Ray resources "
                            f"{json.dumps(sel[hw])} (--ray-resources {hw}=JSON if its nodes are "
                            "labelled differently)"
                        )
                continue
            actors = []
            for n in chosen:
                want = dict(sel[hw])
                primary = next(iter(want))
                want[primary] = n["Resources"][primary]  # hold the node's whole device
                handle = actor.options(
                    num_cpus=want.pop("CPU", 0),
                    num_gpus=want.pop("GPU", 0),
                    resources=want,
                    max_restarts=0,
                    scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False),
                ).remote(hw, self.build, n["NodeID"])
                actors.append((handle, n["NodeID"]))
            self.pools[hw] = Pool(self.ray, hw, actors, self._done, self._started)
            self.say(f"{hw}: {len(actors)} node(s), one benchmark at a time on each")
            kept += [t for t in targets if t.hw == hw]
        if not kept:
            raise ConfigError("nothing to run: no target has a node in the cluster (see above)")
        scenarios = [RemoteScenario(self, t, self.pools[t.hw]) for t in kept]
        # every node builds its targets at once, not each on its first point (a failed build
        # is tried again, and reported, by the point that needs it)
        for s in scenarios:
            for j, (handle, _) in enumerate(s.pool.actors):
                if j in s.pool.alive:
                    handle.open.remote(s.name, s.target)
        return scenarios

    def submit(self, scenario: Scenario, point: Point, progress: Progress) -> Future:
        assert isinstance(scenario, RemoteScenario)
        return scenario.pool.submit(Job(scenario.target, point, progress))

    def _started(self, job: Job) -> None:
        job.progress(f"{job.point.label} sent to node {(job.node or '')[:12]}")

    def _done(self, job: Job, m: Measurement, text: str) -> None:
        self.say(text, job.target.hw)
        job.future.set_result(m)

    def finish(self, console, results: list[tuple[Scenario, list[dict[str, Any]]]]) -> None:
        """Copy the chosen points' artifact folders home, to <artifacts-dir>/<hw>/<folder>."""
        mode = self.config.fetch_artifacts
        if mode == "none":
            return
        by_node = {
            node: (pool, i)
            for pool in self.pools.values()
            for i, (_, node) in enumerate(pool.actors)
        }
        seen: set[tuple[str, str]] = set()
        for s, rows in results:
            t = s.target
            good = [r for r in rows if not runner.failed(r)]
            chosen = [best_row(good)] if mode == "best" else good
            for r in chosen:
                path = _artifact_path(r) if r else None
                if not path or (r.get("node"), path) in seen:
                    continue
                seen.add((r.get("node"), path))
                where = by_node.get(r.get("node"))
                if where is None:
                    self.say(f"artifact {path}: its node {r.get('node')} is not in this run")
                    continue
                pool, i = where
                # <artifacts-dir>/<hw>/ + the folder's path under the nodes' artifacts dir
                rel = _under(path, t.artifacts_dir)
                try:
                    blob = self.ray.get(pool.actors[i][0].pack.remote(path, rel))
                except self.ray.exceptions.RayError as e:
                    self.say(f"artifact {path}: not fetched ({type(e).__name__})")
                    continue
                if blob is None:
                    continue
                dest = Path(t.artifacts_dir) / t.hw
                dest.mkdir(parents=True, exist_ok=True)
                with tarfile.open(fileobj=io.BytesIO(blob), mode="r:gz") as tar:
                    tar.extractall(dest, filter="data")
                self.say(f"artifact fetched: {dest / rel} (manifest included)", t.hw)

    def close(self) -> None:
        """Let every actor release what it opened (servers, engines), then end them all."""
        handles = [h for pool in self.pools.values() for h, _ in pool.actors]
        for pool in self.pools.values():
            pool.close()  # the points still queued (after Ctrl-C) are cancelled
        # an actor may still be measuring its point: wait a little, then end it anyway
        if handles:
            refs = [h.close.remote() for h in handles]
            self.ray.wait(refs, num_returns=len(refs), timeout=30)
        for h in handles:
            self.ray.kill(h)


class PlanError(Exception):
    """A node could not build or plan a target (the reason is the message)."""


class RemoteScenario(Scenario):
    """A target's scenario as the runner sees it: built, and its plan run, on one of the
    target's nodes (another when that one is lost: the plan starts over there, and the runner
    resumes the points it already has); its points measured on any of them."""

    def __init__(self, executor: RayExecutor, target: TargetConfig, pool: Pool):
        self.executor, self.target, self.pool = executor, target, pool
        self.ray = executor.ray
        self.group, self.name = target.hw, target.name
        self.info: dict[str, Any] = {"header": [], "estimate": None, "adaptive": True}
        self.planner: int | None = None
        self.tried: set[int] = set()
        self.reasons: list[str] = []
        self.node: str | None = None

    @property
    def adaptive(self) -> bool:  # type: ignore[override]
        return bool(self.info["adaptive"])

    def _open_planner(self) -> bool:
        """Build the scenario on the next node that can; False when none is left."""
        while (i := self.pool.planner(self.tried)) is not None:
            self.tried.add(i)
            handle, self.node = self.pool.actors[i]
            try:
                reply = self.ray.get(handle.open.remote(self.name, self.target))
            except self.ray.exceptions.RayError as e:
                self.reasons.append(self._lost(i, e))
                continue
            self.executor.say(reply.text, self.group)
            if reply.error:
                self.reasons.append(reply.error)
                continue
            self.planner, self.info = i, reply.value
            return True
        self.planner = None
        return False

    def _lost(self, i: int, e: Exception) -> str:
        """Why a call to actor `i` failed in Ray; an actor that died gets no point again."""
        if isinstance(e, self.ray.exceptions.RayActorError):
            self.pool.lost(i)
        return f"node {self.pool.actors[i][1][:12]} was lost ({type(e).__name__})"

    def header(self) -> list[str]:
        if not self._open_planner():
            return []
        return [f"── {self.name}: planned on node {self.node[:12]}", *self.info["header"]]

    def estimate(self) -> int | None:
        return self.info["estimate"]

    def _unmeasurable(self) -> Unmeasurable:
        point = Point(
            {
                "target": {k: getattr(self.target, k) for k in ("hw", "engine", "precision")},
                "failed": "setup",
            },
            f"{self.name}: setup",
        )
        why = "; ".join(self.reasons) or f"no {self.target.hw} node is left in the cluster"
        return Unmeasurable(point, failed(self.node, why, **_failed_columns(self.target)))

    def plan(self) -> runner.Plan:
        row: dict[str, Any] | None = None
        restart = True
        while True:
            if self.planner is None:
                raise self._unmeasurable()
            handle = self.pool.actors[self.planner][0]
            try:
                call = handle.next_point.options(concurrency_group="plan")
                reply: Reply = self.ray.get(call.remote(self.name, row, restart))
            except self.ray.exceptions.RayError as e:
                reply = Reply(error=self._lost(self.planner, e))
            self.executor.say(reply.text, self.group)
            if reply.error:  # plan again from the start on another node
                self.reasons.append(reply.error)
                self._open_planner()
                row, restart = None, True
                continue
            restart = False
            if reply.value is None:
                return
            row = yield reply.value

    def measure(self, point: Point, progress: Progress) -> Measurement:
        raise RuntimeError("a remote scenario's points are measured on its nodes")

    def summarize(self, console, rows: list[dict[str, Any]], out: Path) -> None:
        """The node that planned the target summarizes; its files come home to `out`."""
        if self.planner is None:
            return
        handle = self.pool.actors[self.planner][0]
        try:
            text, files = self.ray.get(handle.summarize.remote(self.name, rows, str(out)))
        except self.ray.exceptions.RayError:
            text, files = "", {}
        for name, blob in files.items():
            (out / name).parent.mkdir(parents=True, exist_ok=True)
            (out / name).write_bytes(blob)
        self.executor.say(text, self.group)


def _artifact_path(row: dict[str, Any]) -> str | None:
    try:
        return json.loads(row.get("config_json") or "{}").get("engine", {}).get("artifact")
    except (TypeError, ValueError, AttributeError):
        return None


def _under(path: str, root: str) -> str:
    """`path` relative to `root` when it lies there (as exports do), else its folder name."""
    try:
        return Path(path).relative_to(root).as_posix()
    except ValueError:
        return Path(path).name


def launch(
    build: Build,
    target: TargetConfig,
    config: ExecutorConfig,
    output: OutputConfig,
    console,
    title: str,
) -> int:
    """`--executor ray`: measure every target the lists name on the cluster; 0 when done."""
    ray = import_ray()
    targets = plan_targets(target, console)
    if not targets:
        raise ConfigError("nothing to run: every target was skipped (reasons above)")
    started = False

    def setup() -> tuple[list[Scenario], Executor]:
        nonlocal started
        started = connect(ray, config, console)  # after the output folder is locked
        executor = RayExecutor(ray, config, build, console)
        return executor.scenarios(targets), executor

    try:
        return runner.run_command(output, console, f"{title} --executor ray", setup)
    finally:
        if started:
            ray.shutdown()


def launcher(config: ExecutorConfig):
    """The launch function `--executor` names: this module's for ray, the runner's for local."""
    return launch if config.executor == "ray" else runner.run_local
