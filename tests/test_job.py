"""`python -m harness.job IN OUT`: order, resume after kill -9, bad lines, the server's outputs."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import help_text

from harness.job import main

ROOT = Path(__file__).resolve().parent.parent
CLASSIFIER = ["--model", "distilbert-sentiment-tiny", "--weights", "random"]
EMBEDDER = ["--model", "bge-base-tiny", "--weights", "random"]
WORDS = "the a river city music long short happy sad film plot actor great bad boring".split()


def lines(n: int, seed: int = 1) -> list[str]:
    """Texts of 1 to 60 words, some repeated, in no length order."""
    rng = random.Random(seed)
    out = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 60))) for _ in range(n)]
    for i in range(0, n, 17):
        out[i] = out[0]  # duplicates must come back at each of their places
    return out


def write_text(path: Path, texts: list[str]) -> Path:
    path.write_text("".join(t + "\n" for t in texts))
    return path


def run(capsys, *argv) -> tuple[int, str]:
    try:
        code = main([str(a) for a in argv])
    except SystemExit as e:  # argparse errors
        code = e.code
    out = capsys.readouterr()
    return code, out.out + out.err


def cosine_rows(a, b) -> np.ndarray:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_outputs_come_back_in_input_order(capsys, tmp_path):
    from engines import create_engine
    from engines.registry import engine_config

    texts = lines(150)
    src = write_text(tmp_path / "in.txt", texts)
    out = tmp_path / "out.parquet"
    code, said = run(capsys, src, out, *EMBEDDER, "--chunk-size", 40, "--max-batch-size", 8)
    assert code == 0, said
    df = pd.read_parquet(out)
    assert df["line"].tolist() == list(range(1, 151))
    assert "id" not in df.columns and not (tmp_path / "out.parquet.parts").exists()
    with create_engine(engine_config("eager", "bge-base-tiny", weights="random")) as engine:
        want = np.concatenate([engine.predict([t]).values for t in texts])  # one by one: no pad
    got = np.stack(df["embedding"].to_numpy())
    assert got.shape == want.shape
    assert cosine_rows(got, want).min() >= 0.9999


def test_jsonl_and_parquet_inputs_keep_their_ids(capsys, tmp_path):
    texts = lines(30)
    jsonl = tmp_path / "in.jsonl"
    jsonl.write_text(
        "".join(json.dumps({"id": f"doc-{i}", "text": t}) + "\n" for i, t in enumerate(texts))
    )
    parquet = tmp_path / "in.parquet"
    pd.DataFrame({"body": texts, "id": range(30)}).to_parquet(parquet)
    code, said = run(capsys, jsonl, tmp_path / "a.parquet", *CLASSIFIER, "--chunk-size", 7)
    assert code == 0, said
    a = pd.read_parquet(tmp_path / "a.parquet")
    assert a["id"].tolist() == [f"doc-{i}" for i in range(30)] and a["line"].tolist() == list(
        range(1, 31)
    )
    assert set(a["label"]) <= {"negative", "neutral", "positive"}
    assert np.allclose(np.stack(a["probabilities"].to_numpy()).sum(1), 1.0, atol=1e-5)
    code, said = run(capsys, parquet, tmp_path / "b.parquet", *CLASSIFIER, "--text-column", "body")
    assert code == 0, said
    b = pd.read_parquet(tmp_path / "b.parquet")
    assert b["id"].tolist() == [str(i) for i in range(30)]
    assert b["label"].tolist() == a["label"].tolist()  # the same texts, the same answers


BAD = [
    ("in.txt", b"good one\nalso good\n   \nfine\n", "line 3: empty"),
    ("in.jsonl", b'{"text": "a"}\n{"text": "b"}\n{"text": "c"\n', "line 3: not valid JSON"),
    ("in.jsonl", b'{"text": "a"}\n{"text": 5}\n{"text": "c"}\n', "line 2: 'text' is int"),
    ("in.txt", b"good\nbad \xff\xfe bytes\n", "line 2: not UTF-8 (byte 0xff at column 5)"),
]


@pytest.mark.parametrize("name,content,expected", BAD)
def test_a_bad_line_is_refused_with_its_number_before_any_work(
    capsys, tmp_path, name, content, expected
):
    src = tmp_path / name
    src.write_bytes(content)
    out = tmp_path / "out.parquet"
    code, said = run(capsys, src, out, *CLASSIFIER)
    assert code == 2 and expected in said and "--skip-bad" in said, said
    assert len([ln for ln in said.strip().splitlines() if ln.strip()]) == 1, said
    assert not out.exists() and not (tmp_path / "out.parquet.parts").exists()


def test_an_over_long_line_is_refused_unless_inputs_are_cut(capsys, tmp_path):
    src = write_text(tmp_path / "in.txt", ["short", " ".join(["word"] * 40), "short again"])
    out = tmp_path / "out.parquet"
    argv = [src, out, *CLASSIFIER, "--max-seq-len", 16]
    code, said = run(capsys, *argv, "--no-truncate")
    assert code == 2 and "line 2:" in said and "over the model's length" in said, said
    code, said = run(capsys, *argv)  # the default cuts it, and says so
    assert code == 0 and "cut at 16 tokens" in said, said
    assert len(pd.read_parquet(out)) == 3


def test_skip_bad_logs_and_skips_the_bad_lines(capsys, tmp_path):
    src = tmp_path / "in.txt"
    src.write_bytes(b"one\n\ntwo\nthree \xff\nfour\n")
    out = tmp_path / "out.parquet"
    code, said = run(capsys, src, out, *CLASSIFIER, "--skip-bad")
    assert code == 0, said
    assert "skipped line 2: empty" in said and "skipped line 4: not UTF-8" in said
    assert pd.read_parquet(out)["line"].tolist() == [1, 3, 5]


def test_a_parts_folder_of_another_job_and_a_finished_out_are_refused(capsys, tmp_path):
    src = write_text(tmp_path / "in.txt", lines(12))
    out = tmp_path / "out.parquet"
    assert run(capsys, src, out, *CLASSIFIER)[0] == 0
    code, said = run(capsys, src, out, *CLASSIFIER)
    assert code == 2 and "pass --fresh" in said
    parts = tmp_path / "out.parquet.parts"
    parts.mkdir()
    (parts / "job.json").write_text(json.dumps({"input_sha256": "other", "chunk_size": 1}))
    code, said = run(capsys, src, out, *CLASSIFIER)
    assert code == 2 and "holds a job with other inputs or settings" in said, said
    assert "chunk_size" in said and "input_sha256" in said
    code, said = run(capsys, src, out, *CLASSIFIER, "--fresh")
    assert code == 0 and len(pd.read_parquet(out)) == 12


def test_resume_after_kill_9_repeats_and_loses_nothing(capsys, tmp_path):
    n = 4000
    src = write_text(tmp_path / "in.txt", lines(n, seed=7))
    out = tmp_path / "out.parquet"
    parts = tmp_path / "out.parquet.parts"
    argv = [str(src), str(out), *CLASSIFIER, "--chunk-size", "100", "--threads", "1"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "harness.job", *argv]
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    deadline = time.time() + 120
    while not list(parts.glob("part-*.parquet")) and proc.poll() is None:
        assert time.time() < deadline, "no part appeared in 120 s"
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    said, _ = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, said
    assert not out.exists(), "the job finished before the kill: nothing to resume"
    before = sorted(p.name for p in parts.glob("part-*.parquet"))
    assert before

    code, said = run(capsys, *argv)
    assert code == 0, said
    resumed = sum(min(100, n - int(p[5:17])) for p in before)
    assert f"resuming: {len(before)} chunks ({resumed} inputs) already written" in said, said
    assert f"{n - resumed} inputs in " in said  # only the rest was computed: no input twice
    got = pd.read_parquet(out)

    code, said = run(capsys, src, tmp_path / "whole.parquet", *argv[2:])
    assert code == 0, said
    whole = pd.read_parquet(tmp_path / "whole.parquet")
    assert got["line"].tolist() == list(range(1, n + 1)) == whole["line"].tolist()
    assert got["label"].tolist() == whole["label"].tolist()
    assert np.allclose(
        np.stack(got["probabilities"].to_numpy()), np.stack(whole["probabilities"].to_numpy())
    )


@pytest.mark.parametrize("model", ["bge-base-tiny", "distilbert-sentiment-tiny"])
def test_outputs_equal_the_servers(capsys, tmp_path, model):
    import urllib.request

    from helpers import ServerThread
    from rich.console import Console

    from harness.config import ServeCommandConfig, TargetConfig
    from harness.serve import build_server

    texts = lines(60, seed=3)
    src = write_text(tmp_path / "in.txt", texts)
    out = tmp_path / "out.parquet"
    code, said = run(capsys, src, out, "--model", model, "--weights", "random", "--chunk-size", 25)
    assert code == 0, said
    df = pd.read_parquet(out)
    cfg = ServeCommandConfig(target=TargetConfig(model=model, weights="random"))
    server, _, _ = build_server(cfg, Console(stderr=True))
    route = "/v1/embeddings" if model == "bge-base-tiny" else "/classify"
    answers = []
    with ServerThread(server) as s:
        for i in range(0, len(texts), 8):
            req = urllib.request.Request(
                s.url + route,
                data=json.dumps({"input": texts[i : i + 8], "model": model}).encode(),
                headers={"Content-Type": "application/json"},
            )
            with urllib.request.urlopen(req, timeout=30) as r:
                data = json.loads(r.read())["data"]
            answers += (
                sorted(data, key=lambda a: a.get("index", 0)) if route != "/classify" else data
            )
    assert len(answers) == len(texts)
    if route == "/classify":  # the likeliest label first
        assert df["label"].tolist() == [a[0]["label"] for a in answers]
    else:
        want = np.asarray([a["embedding"] for a in answers])
        assert cosine_rows(np.stack(df["embedding"].to_numpy()), want).min() >= 0.9999


def test_help_documents_the_job_flags(capsys):
    text = help_text(main, capsys)
    for flag in (
        *"IN OUT --engine --artifact --model --max-batch-size --max-batch-tokens".split(),
        *"--max-batch-padding --no-truncate --chunk-size --skip-bad --fresh --text-column".split(),
    ):
        assert flag in text, flag
