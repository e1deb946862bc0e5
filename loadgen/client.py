"""The aiohttp client: one request per call, judged and recorded; session, preflight, warm-up."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
import urllib.parse
from collections.abc import AsyncIterator

from core.environment import var
from core.errors import BillionbenchError, ConfigError
from loadgen.grpc import GrpcSession
from loadgen.protocols import PROTOCOLS, Parsed, Target
from loadgen.validation import Check, validate
from workloads import Workload


class TargetUnreachable(BillionbenchError, ConnectionError):
    """The server does not accept connections; the message names the URL and the cause."""


class TargetError(BillionbenchError):
    """The server answers, but refuses the requests (wrong model, path or token) or answers out
    of contract."""


def request_headers(target: Target) -> dict[str, str]:
    """JSON content type plus the bearer token named by `target.token_env` (read now)."""
    headers = {"Content-Type": "application/json"}
    if target.token_env:
        token = var(target.token_env)
        if not token:
            raise ConfigError(
                f"environment variable {target.token_env} (--token-env) is not set or empty"
            )
        headers["Authorization"] = f"Bearer {token}"
    return headers


class Recorder:
    """Per-request records of one run, kept as plain tuples until the run ends."""

    def __init__(self) -> None:
        # start (scheduled or sent), sent, end (ns); inputs; kind; invalid outputs; correct; labelled
        self.rows: list[tuple[int, int, int, int, str, int, int, int]] = []
        self.nvec: list[int] = []
        self.first: dict[str, str] = {}
        # perf_counter_ns -> epoch ns, so several load generators' records share one clock
        self.epoch_offset_ns = time.time_ns() - time.perf_counter_ns()

    def add(self, start, sent, end, inputs, kind, check: Check | None, detail: str | None):
        c = check or Check()
        self.rows.append((start, sent, end, inputs, kind, c.invalid, c.correct, c.labelled))
        self.nvec += c.nvec
        if detail and kind not in self.first:
            self.first[kind] = detail


# what a protocol adapter raises on a body that is not its answer
PARSE_ERRORS = (ValueError, KeyError, TypeError, IndexError, AttributeError, StopIteration)


def _one_line(payload: bytes, limit: int = 200) -> str:
    return " ".join(payload[:limit].decode("utf-8", "replace").split())


class Client:
    """Sends the workload's batches to one target and records how each request ended."""

    def __init__(self, target: Target, workload: Workload | None, inputs_per_request: int, session):
        self.target = target
        self.workload = workload
        self.k = inputs_per_request
        self.session = session
        self.adapter = PROTOCOLS[target.protocol](target)
        self.headers = request_headers(target)
        self.rec = Recorder()
        self.inflight = 0

    def _judge(self, status: int, payload: bytes, n: int, labels) -> tuple[str, Check | None, str]:
        if 200 <= status < 300:
            if not self.adapter.checks_outputs:
                return "ok", None, ""
            try:
                parsed = self.adapter.parse(self.adapter.decode(payload))
            except PARSE_ERRORS as e:
                c = Check(invalid=n, reason=f"unparseable response ({type(e).__name__}: {e})")
                return "invalid", c, c.reason
            c = validate(parsed, n, self.target, labels)
            return ("ok" if c.invalid == 0 else "invalid"), c, c.reason or ""
        detail = f"HTTP {status}: {_one_line(payload)}"
        if status == 429:
            return "http_429", None, detail
        if 400 <= status < 500:
            return "http_4xx", None, detail
        if 500 <= status < 600:
            return "http_5xx", None, detail
        return "http_other", None, detail

    async def _exchange(self, req, data: bytes) -> tuple[int, bytes]:
        """One request on the wire: (status, payload)."""
        if self.adapter.transport == "grpc":
            return await self.session.call(data)
        async with self.session.request(
            req.method, self.target.url + req.path, data=data, headers=self.headers
        ) as resp:
            return resp.status, await resp.read()

    async def outputs(self, texts: list[str]) -> Parsed:
        """The target's parsed answers for these texts, not timed or recorded, and not judged
        (the caller compares them); TargetError on a refusal or an unparseable answer."""
        import aiohttp

        req = self.adapter.request(texts)
        try:
            status, payload = await self._exchange(req, self.adapter.encode(req.body))
        except (asyncio.TimeoutError, aiohttp.ClientError, OSError) as e:
            raise TargetUnreachable(f"{self.target.url}: {type(e).__name__}: {e}") from e
        if not 200 <= status < 300:
            raise TargetError(
                f"{self.target.url} refused {len(texts)} inputs: HTTP {status}: {_one_line(payload)}"
            )
        try:
            return self.adapter.parse(self.adapter.decode(payload))
        except PARSE_ERRORS as e:
            raise TargetError(
                f"{self.target.url}: unparseable response ({type(e).__name__}: {e})"
            ) from e

    async def send(self, index: int, sched_ns: int | None = None, *, record: bool = True):
        """One request for the index-th batch; returns (kind, status, payload, detail)."""
        import aiohttp

        texts, labels = self.workload.batch(index, self.k)
        req = self.adapter.request(texts)
        data = self.adapter.encode(req.body)
        status, payload, kind, detail, check = 0, b"", "", "", None
        self.inflight += 1
        sent = time.perf_counter_ns()
        try:
            status, payload = await self._exchange(req, data)
        except asyncio.TimeoutError:
            kind, detail = "timeouts", f"no answer within {self.target.timeout_s:g} s"
        except (aiohttp.ClientError, OSError) as e:
            kind, detail = "connection_errors", f"{type(e).__name__}: {e}"
        finally:
            self.inflight -= 1
        end = time.perf_counter_ns()
        if not kind:
            kind, check, detail = self._judge(status, payload, len(texts), labels)
        if record:
            start = sent if sched_ns is None else sched_ns
            self.rec.add(start, sent, end, len(texts), kind, check, detail)
        return kind, status, payload, detail


def open_session(target: Target, limit: int):
    """An aiohttp session with at most `limit` connections and the target's request timeout
    (a gRPC target: one channel, the timeout per call)."""
    if PROTOCOLS[target.protocol].transport == "grpc":
        auth = request_headers(target).get("Authorization")
        return GrpcSession(target.url, target.timeout_s, (("authorization", auth),) if auth else ())
    import aiohttp

    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=limit, ttl_dns_cache=300),
        timeout=aiohttp.ClientTimeout(total=target.timeout_s),
    )


async def preflight(url: str, timeout_s: float = 5.0) -> None:
    """A TCP connect, so an unreachable server is one clear error instead of N failures."""
    u = urllib.parse.urlsplit(url)
    host, port = u.hostname or "", u.port or (443 if u.scheme == "https" else 80)
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout_s)
    except ConnectionRefusedError as e:
        reason, err = "connection refused", e
    except socket.gaierror as e:
        reason, err = f"cannot resolve host {host}", e
    except asyncio.TimeoutError as e:
        reason, err = f"no answer within {timeout_s:g} s", e
    except OSError as e:
        reason, err = e.strerror or str(e), e
    else:
        writer.close()
        return
    raise TargetUnreachable(
        f"cannot reach {url} ({reason}); start the server or fix --url"
    ) from err


async def warmup(client: Client, n: int) -> None:
    """Untimed requests (connections, server warm-up); refuse a target that rejects all of them."""
    if n <= 0:
        return
    outcomes = await asyncio.gather(*(client.send(i, record=False) for i in range(n)))
    kinds = {o[0] for o in outcomes}
    url = client.target.url
    if kinds == {"http_4xx"}:
        raise TargetError(
            f"every warm-up request to {url} was refused ({outcomes[0][3]}); "
            "check --model, --protocol and --token-env"
        )
    if kinds == {"connection_errors"}:
        raise TargetUnreachable(
            f"cannot reach {url} ({outcomes[0][3]}); start the server or fix --url"
        )


@contextlib.asynccontextmanager
async def connected(
    target: Target,
    workload: Workload,
    inputs_per_request: int,
    *,
    limit: int,
    warmup_requests: int,
    check_reachable: bool,
) -> AsyncIterator[Client]:
    """A warmed-up client over at most `limit` connections; token and server are checked first."""
    request_headers(target)  # a missing token is a config error, found before any network
    if check_reachable:
        await preflight(target.url)
    async with open_session(target, limit) as http:
        client = Client(target, workload, inputs_per_request, http)
        await warmup(client, warmup_requests)
        yield client
