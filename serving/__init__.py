"""The front of an engine: dynamic batcher, HTTP server, KServe v2 codec, metrics."""
