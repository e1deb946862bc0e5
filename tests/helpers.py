"""Shared test helpers (not tests): a server running in a background thread."""

from __future__ import annotations

import asyncio
import socket
import threading

from core.net import free_port


class ServerThread:
    """A `serving.server.Server` on 127.0.0.1 in a background event loop, stopped at exit."""

    def __init__(self, server, port: int | None = None, close_engine: bool = True):
        self.server = server
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.close_engine = close_engine
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    @property
    def batcher(self):
        return self.server.batcher

    @property
    def engine(self):
        return self.server.engine

    def _serve(self) -> None:
        self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)
        runner = self.loop.run_until_complete(self.server.start("127.0.0.1", self.port))
        self._ready.set()
        self.loop.run_forever()
        self.loop.run_until_complete(runner.cleanup())

    def __enter__(self):
        self.batcher.start()
        self._thread.start()
        assert self._ready.wait(10)
        return self

    def __exit__(self, *exc) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.batcher.stop()
        if self.close_engine:
            self.engine.close()


class AppThread:
    """An aiohttp application on 127.0.0.1 (a free port) in its own event loop thread."""

    def __init__(self, app) -> None:
        from aiohttp import web

        self.loop = asyncio.new_event_loop()
        self.runner = web.AppRunner(app, access_log=None)
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        self.loop.run_until_complete(self.runner.setup())
        self.loop.run_until_complete(web.SockSite(self.runner, sock).start())
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


class FakeApp:
    """A fake HTTP server for the tests: `routes` is (path, handler) for POSTs."""

    def __init__(self, *routes) -> None:
        from aiohttp import web

        app = web.Application()
        for path, handler in routes:
            app.router.add_post(path, handler)
        self.app = AppThread(app)
        self.url = self.app.url

    def close(self) -> None:
        self.app.close()


def help_text(main, capsys) -> str:
    """What `main(["--help"])` prints; it must exit 0."""
    import pytest

    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    return capsys.readouterr().out


def schema_row(**kw) -> dict:
    """A result row with every schema column: None, but for a CPU classifier's identity and
    what `kw` sets."""
    from harness.results import COLUMNS

    r = dict.fromkeys(COLUMNS)
    r.update(
        task="classification",
        model_name="distilbert-sentiment",
        hw_type="cpu",
        host_name="cpu-box",
        engine="eager",
        image="eager/fp32/sdpa",
        weights="pretrained",
        batch_size=8,
        n_models=1,
        failed_requests=0,
    )
    r.update(kw)
    return r


def manifest(**kw):
    """A Manifest of a tiny ONNX embedder, but for what `kw` sets."""
    from engines.artifact import Manifest

    base = dict(
        model="bge-base-tiny",
        task="embedding",
        format="onnx",
        precision="fp32",
        model_id="config:bge-base-tiny",
        revision="config-only",
        weights="random",
        tokenizer="fallback-wordpiece",
        input_names=["input_ids", "attention_mask"],
        output_names=["last_hidden_state"],
    )
    base.update(kw)
    return Manifest(**base)


def write_export_manifest(folder, spec, info, loaded, tok, **fields) -> None:
    """What `exporters.api.export` writes after an exporter ran, for tests that call one alone."""
    from engines.artifact import Manifest, write_manifest
    from engines.base import fields_from

    provenance = {"model_id": loaded.source, "weights": loaded.weights, "tokenizer": tok.source}
    write_manifest(folder, fields_from(Manifest, spec, info, provenance, **fields))
