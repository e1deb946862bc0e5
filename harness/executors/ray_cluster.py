"""The Ray executor: a command's targets (hardware x engine x precision) measured on a cluster.

Each hardware profile names the Ray resources that select its nodes; one actor per selected
node holds the node's whole device and measures one point at a time (harness.executors.node).
This process plans, resumes, shows progress per hardware and is the only writer of rows. A
point whose node dies is retried once on another node of the same hardware, else recorded as
failed with the reason, and the rest goes on. We schedule nothing ourselves beyond that: Ray
places the actors, on the nodes its resources name.
"""

from __future__ import annotations

import argparse
import io
import itertools
import json
import logging
import os
import tarfile
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from engines.errors import BillionbenchError, ConfigError, MissingDependency
from harness import hardware
from harness.executors.node import Build, NodeWorker, Reply, failed
from harness.hardware import ACCELERATORS
from harness.results import ResultsStore
from harness.runner import Measurement, Point, Recorder, stored_rows
from harness.setup import check_target
from harness.tables import best_row, print_rows, progress_bar

log = logging.getLogger("billionbench")


def import_ray():
    """ray, or the one-line error that names the install."""
    try:
        import ray
    except ImportError as e:
        raise MissingDependency("ray", "ray") from e
    return ray


@dataclass(frozen=True)
class Target:
    """One hardware x engine x precision of a run: one scenario, built on its nodes."""

    hw: str
    engine: str
    precision: str

    @property
    def name(self) -> str:
        return f"{self.hw}/{self.engine}/{self.precision}"

    @property
    def columns(self) -> dict[str, str]:
        """What a failed point's row says about its target (hw_type stays empty: a row never
        claims hardware that no node detected)."""
        return {"engine": self.engine, "precision": self.precision}

    def args(self, args: argparse.Namespace) -> argparse.Namespace:
        """The flags a node builds this target's scenario from (one value per target flag)."""
        return argparse.Namespace(
            **{**vars(args), "hw": self.hw, "engine": self.engine, "precision": self.precision}
        )


def _split(value: str) -> list[str]:
    return [v.strip() for v in str(value).split(",") if v.strip()]


def plan_targets(args: argparse.Namespace, console) -> list[Target]:
    """Every combination of the target flags that can run; the others are said once and skipped."""
    if "auto" in _split(args.hw):
        raise ConfigError(
            "--executor ray needs --hw naming the hardware to run on (e.g. --hw cpu or "
            f"--hw t4,l4,inf2); choose from: {', '.join(hardware.PROFILES)}"
        )
    out = []
    for hw, engine, precision in itertools.product(
        _split(args.hw), _split(args.engine), _split(args.precision)
    ):
        t = Target(hw, engine, precision)
        try:
            check_target(args, engine, hw, precision)
        except BillionbenchError as e:
            console.print(f"skipped {t.name}: {e}", highlight=False, markup=False)
            continue
        out.append(t)
    return out


def selectors(args: argparse.Namespace) -> dict[str, dict[str, float]]:
    """Which Ray resources select each hardware: the profiles', overridden by --ray-resources."""
    out = {name: p.ray_resources for name, p in hardware.PROFILES.items()}
    for item in args.ray_resources:
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


def connect(ray, args: argparse.Namespace, console) -> bool:
    """Join the cluster (--ray-address, $RAY_ADDRESS, then auto); with none, start a local one
    and say so. True when this process started or joined Ray (and so shuts it down)."""
    if ray.is_initialized():
        return False
    given = args.ray_address or os.environ.get("RAY_ADDRESS")
    quiet = dict(logging_level=logging.WARNING, log_to_driver=bool(args.verbose))
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
    target: Target
    args: argparse.Namespace
    point: Point
    future: Future = field(default_factory=Future)
    tried: set[int] = field(default_factory=set)
    reasons: list[str] = field(default_factory=list)


class Pool:
    """The actors of one hardware and the points waiting for them. Each actor measures one point
    at a time; a point whose actor dies (or cannot build it) is retried once on another."""

    def __init__(self, ray, hw: str, actors: list[tuple[Any, str]], done, started):
        self.ray, self.hw, self.done, self.started = ray, hw, done, started
        self.actors = actors  # (handle, node id)
        self.alive = set(range(len(actors)))
        self.queue: list[Job] = []
        self.cond = threading.Condition()
        self.closed = False
        self.threads = [
            threading.Thread(target=self._serve, args=(i,), daemon=True) for i in range(len(actors))
        ]
        for t in self.threads:
            t.start()

    def submit(self, job: Job) -> Future:
        with self.cond:
            self.queue.append(job)
            self._fail_orphans()
            self.cond.notify_all()
        return job.future

    def planner(self, exclude: set[int]) -> int | None:
        with self.cond:
            return min(self.alive - exclude, default=None)

    def close(self) -> None:
        with self.cond:
            self.closed = True
            self.cond.notify_all()

    def _take(self, i: int) -> Job | None:
        with self.cond:
            while not self.closed and i in self.alive:
                job = next((j for j in self.queue if i not in j.tried), None)
                if job is not None:
                    self.queue.remove(job)
                    return job
                self.cond.wait()
            return None

    def _serve(self, i: int) -> None:
        handle, node = self.actors[i]
        while (job := self._take(i)) is not None:
            self.started(job)
            try:
                reply: Reply = self.ray.get(
                    handle.measure.remote(job.target.name, job.args, job.point)
                )
            except self.ray.exceptions.RayError as e:
                self._retry(
                    job, i, node, f"node {node[:12]} was lost mid-point ({type(e).__name__})"
                )
                with self.cond:
                    self.alive.discard(i)
                    self._fail_orphans()
                    self.cond.notify_all()
                return
            if reply.error:
                self._retry(job, i, node, reply.error)
            else:
                self._finish(job, reply.value, reply.text)

    def _retry(self, job: Job, i: int, node: str, reason: str) -> None:
        job.tried.add(i)
        job.reasons.append(reason)
        with self.cond:
            others = self.alive - job.tried - {i}
            if len(job.tried) < 2 and others:
                self.queue.append(job)
                self.cond.notify_all()
                return
        self._finish(job, failed(node, "; ".join(job.reasons), **job.target.columns), "")

    def _fail_orphans(self) -> None:
        """Fail the waiting points that no alive actor may take (called holding the lock)."""
        for job in [j for j in self.queue if not (self.alive - j.tried)]:
            self.queue.remove(job)
            why = job.reasons or [f"no {self.hw} node is left in the cluster"]
            self._finish(job, failed(None, "; ".join(why), **job.target.columns), "")

    def _finish(self, job: Job, m: Measurement, text: str) -> None:
        self.done(job, m, text)  # queued to the writer: this actor takes its next point now


# --------------------------------------------------------------------------- the driver
class PlanError(Exception):
    """A node could not build or plan a target (the reason is the message)."""


SUMMARY = [
    ("hw_type", "hw", 0),
    ("engine", "engine", 0),
    ("precision", "precision", 0),
    ("batch_size", "batch", 0),
    ("throughput_req_per_sec", "inputs/s", 1),
    ("p99_latency_ms", "p99 ms", 2),
    ("1B_cost", "$/1B", 2),
    ("floor_1B_cost", "floor $/1B", 2),
    ("efficiency", "efficiency", 3),
    ("node", "node", 0),
]


class ClusterRun:
    """One run of a command's targets on the cluster: this process is the only writer."""

    def __init__(self, ray, args: argparse.Namespace, console, build: Build, store: ResultsStore):
        self.ray, self.args, self.console, self.build = ray, args, console, build
        self.store = store  # held (locked) by run_on_ray for the whole run
        self.recorder = Recorder(self.store, stored_rows(self.store))
        self.pools: dict[str, Pool] = {}
        self.planners: dict[Target, tuple[Pool, int]] = {}
        self.lock = threading.Lock()
        self.measured: set[str] = set()  # keys measured (or failed) in this run
        self.headed: set[Target] = set()
        self.bar = None
        self.tasks: dict[str, Any] = {}
        # the one thread that appends rows, so no actor waits for a write to take its next point
        self.writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bb-writer")

    # ---- setup
    def start_pools(self, targets: list[Target]) -> list[Target]:
        """One actor per node each target hardware selects; hardware with no node is skipped."""
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        sel, nodes = selectors(self.args), self.ray.nodes()
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
            self.pools[hw] = Pool(self.ray, hw, actors, self.deliver, self.started)
            self.say(f"{hw}: {len(actors)} node(s), one benchmark at a time on each")
            kept += [t for t in targets if t.hw == hw]
        return kept

    # ---- output
    def say(self, text: str, hw: str | None = None) -> None:
        for line in text.rstrip().splitlines():
            prefix = f"[{hw}] " if hw and len(self.pools) > 1 else ""
            self.console.print(prefix + line, highlight=False, markup=False, soft_wrap=True)

    def advance(self, hw: str, label: str) -> None:
        if self.bar is not None:
            self.bar.update(self.tasks[hw], advance=1, info=label)

    def started(self, job: Job) -> None:
        if self.bar is not None:
            self.bar.update(self.tasks[job.target.hw], info=f"measuring {job.point.label}")

    def grow(self, hw: str, n: int | None) -> None:
        if self.bar is not None and n:
            task = self.tasks[hw]
            total = self.bar.tasks[task].total or 0
            self.bar.update(task, total=total + n)

    def deliver(self, job: Job, m: Measurement, text: str) -> None:
        """Hand a point's row to the writer thread; the job's future gets the stored row."""

        def write() -> None:
            try:
                job.future.set_result(self.done(job, m, text))
            except Exception as e:  # noqa: BLE001 - the planner thread re-raises it
                job.future.set_exception(e)

        self.writer.submit(write)

    def done(self, job: Job, m: Measurement, text: str) -> dict[str, Any]:
        """A point's row is back (measured or failed): append it now, say so, count it."""
        row = self.recorder.record(job.point, m)
        with self.lock:
            self.measured.add(job.point.key)
            self.say(text, job.target.hw)
            for msg in m.messages:
                self.console.print(msg, highlight=False)
            if m.row.get("error"):
                self.say(f"{job.point.label}: failed: {m.row['error']}", job.target.hw)
        self.advance(job.target.hw, job.point.label)
        return row

    # ---- planning one target
    def drive(self, target: Target) -> list[dict[str, Any]]:
        """Plan a target on one of its nodes (another if that one fails) and measure its points
        on all of them; a target no node can build is recorded as one failed row."""
        pool, targs = self.pools[target.hw], target.args(self.args)
        tried: set[int] = set()
        reasons: list[str] = []
        submitted: dict[str, Job] = {}
        node = None
        # every node builds the target at once, not each on its first point (a failed build
        # is tried again, and reported, by the point that needs it)
        for j, (handle, _) in enumerate(pool.actors):
            if j in pool.alive:
                handle.open.remote(target.name, targs)
        while (i := pool.planner(tried)) is not None:
            node = pool.actors[i][1]
            try:
                rows = self._plan(target, targs, pool, i, submitted)
            except PlanError as e:
                reasons.append(str(e))
            except self.ray.exceptions.RayError as e:
                reasons.append(f"node {pool.actors[i][1][:12]} was lost ({type(e).__name__})")
            else:
                self.planners[target] = (pool, i)
                return rows
            tried.add(i)
        point = Point({"target": asdict(target), "failed": "setup"}, f"{target.name}: setup")
        why = "; ".join(reasons) or f"no {target.hw} node is left in the cluster"
        job = Job(target, targs, point)
        return [self.done(job, failed(node, why, **target.columns), "")]

    def _plan(self, target, targs, pool: Pool, i: int, submitted: dict[str, Job]):
        handle, node = pool.actors[i]
        reply = self.ray.get(handle.open.remote(target.name, targs))
        self.say(reply.text, target.hw)
        if reply.error:
            raise PlanError(reply.error)
        info = reply.value
        if target not in self.headed:  # once, even when a lost planner is replaced
            self.headed.add(target)
            self.say(f"── {target.name}: planned on node {node[:12]}", target.hw)
            for line in info["header"]:
                self.console.print(line, highlight=False)
            self.grow(target.hw, info["estimate"])
        order: list[Any] = []
        row, restart = None, True
        while True:
            call = handle.next_point.options(concurrency_group="plan")
            reply = self.ray.get(call.remote(target.name, row, restart))
            self.say(reply.text, target.hw)
            restart = False
            if reply.error:
                raise PlanError(reply.error)
            point: Point | None = reply.value
            if point is None:
                break
            if point.key in self.recorder.stored and point.key not in submitted:
                row = self.recorder.stored[point.key]
                if point.key not in self.measured:
                    self.measured.add(point.key)
                    self.say(f"{point.label}: already measured (resume); --fresh to redo")
                    self.advance(target.hw, point.label)
                order.append(row)
                continue
            job = submitted.get(point.key)
            if job is None:
                job = submitted[point.key] = Job(target, targs, point)
                pool.submit(job)
            row = job.future.result() if info["adaptive"] else None
            order.append(job.future)
        return [x.result() if isinstance(x, Future) else x for x in order]

    # ---- the whole run
    def run(self, targets: list[Target]) -> None:

        from harness.report import report_for_run

        targets = self.start_pools(targets)
        if not targets:
            raise ConfigError("nothing to run: no target has a node in the cluster (see above)")
        results: dict[Target, list[dict[str, Any]]] = {}
        try:
            with progress_bar(self.console) as bar:
                self.bar = bar
                for hw in self.pools:
                    self.tasks[hw] = bar.add_task(hw, total=None, info="starting")
                threads = {
                    t: _Thread(target=self.drive, args=(t,), name=t.name, daemon=True)
                    for t in targets
                }
                for th in threads.values():
                    th.start()
                for t, th in threads.items():
                    results[t] = th.result()
            self.bar = None
            self.summarize(results)
            self.fetch_artifacts(results)
        finally:
            self.close()
        report_for_run(self.console, self.args.output_dir, **_limits(self.args))

    def summarize(self, results: dict[Target, list[dict[str, Any]]]) -> None:
        for t, rows in results.items():
            if t in self.planners:
                pool, i = self.planners[t]
                # a scenario's own files (checks.json) come home: the output folder, or one
                # folder per target when there are several
                home = Path(self.args.output_dir)
                if len(results) > 1:
                    home = home / t.name.replace("/", "-")
                try:
                    text, files = self.ray.get(
                        pool.actors[i][0].summarize.remote(t.name, rows, self.store, str(home))
                    )
                except self.ray.exceptions.RayError:
                    text, files = "", {}
                for name, blob in files.items():
                    (home / name).parent.mkdir(parents=True, exist_ok=True)
                    (home / name).write_bytes(blob)
                self.say(text, t.hw)
        best = []
        for rows in results.values():
            b = best_row([r for r in rows if not _failed(r)])
            if b is not None:
                best.append(b)
        if len(results) > 1:
            print_rows(self.console, "best point per target (lowest $/1B)", SUMMARY, best)
        n_failed = sum(_failed(r) for rows in results.values() for r in rows)
        if n_failed:
            self.say(f"{n_failed} point(s) failed; their rows say why (column error)")

    def fetch_artifacts(self, results: dict[Target, list[dict[str, Any]]]) -> None:
        """Copy the chosen points' artifact folders home, to <artifacts-dir>/<hw>/<folder>."""
        mode = self.args.fetch_artifacts
        if mode == "none":
            return
        by_node = {
            node: (pool, i)
            for pool in self.pools.values()
            for i, (_, node) in enumerate(pool.actors)
        }
        seen: set[tuple[str, str]] = set()
        for t, rows in results.items():
            good = [r for r in rows if not _failed(r)]
            chosen = [best_row(good)] if mode == "best" else good
            for r in chosen:
                path = _artifact_path(r)
                if not path or (r.get("node"), path) in seen:
                    continue
                seen.add((r.get("node"), path))
                where = by_node.get(r.get("node"))
                if where is None:
                    self.say(f"artifact {path}: its node {r.get('node')} is not in this run")
                    continue
                pool, i = where
                # <artifacts-dir>/<hw>/ + the folder's path under the nodes' artifacts dir
                rel = _under(path, self.args.artifacts_dir)
                try:
                    blob = self.ray.get(pool.actors[i][0].pack.remote(path, rel))
                except self.ray.exceptions.RayError as e:
                    self.say(f"artifact {path}: not fetched ({type(e).__name__})")
                    continue
                if blob is None:
                    continue
                dest = Path(self.args.artifacts_dir) / t.hw
                dest.mkdir(parents=True, exist_ok=True)
                with tarfile.open(fileobj=io.BytesIO(blob), mode="r:gz") as tar:
                    tar.extractall(dest, filter="data")
                self.say(f"artifact fetched: {dest / rel} (manifest included)", t.hw)

    def close(self) -> None:
        """Let every actor release what it opened (servers, engines), then end them all."""
        self.writer.shutdown(wait=True)
        handles = [h for pool in self.pools.values() for h, _ in pool.actors]
        for pool in self.pools.values():
            pool.close()
        # after Ctrl-C an actor may still be measuring: wait a little, then end it anyway
        if handles:
            refs = [h.close.remote() for h in handles]
            self.ray.wait(refs, num_returns=len(refs), timeout=30)
        for h in handles:
            self.ray.kill(h)


class _Thread(threading.Thread):
    """A thread whose target's result (or exception) is handed to the caller of result()."""

    def run(self) -> None:
        try:
            self._value = self._target(*self._args)  # type: ignore[attr-defined]
            self._error = None
        except BaseException as e:  # noqa: BLE001 - re-raised in result()
            self._value, self._error = None, e

    def result(self):
        self.join()
        if self._error is not None:
            raise self._error
        return self._value


def _failed(row: dict[str, Any]) -> bool:
    e = row.get("error")
    return isinstance(e, str) and bool(e)


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


def _limits(args: argparse.Namespace) -> dict[str, float | None]:
    return {k: getattr(args, k, None) for k in ("max_p95_ms", "max_p99_ms")}


def run_on_ray(args: argparse.Namespace, console, build: Build) -> int:
    """`--executor ray`: measure every target the flags name on the cluster; 0 when done."""
    ray = import_ray()
    targets = plan_targets(args, console)
    if not targets:
        raise ConfigError("nothing to run: every target was skipped (reasons above)")
    store = ResultsStore(args.output_dir, fresh=not args.resume)
    with store.writing("--executor ray"):  # one writer per folder, before the cluster starts
        started = connect(ray, args, console)
        try:
            ClusterRun(ray, args, console, build, store).run(targets)
        finally:
            if started:
                ray.shutdown()
    return 0
