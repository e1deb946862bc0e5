import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from helpers import help_text

from core.errors import MissingDependency
from harness.run import main

ROOT = Path(__file__).resolve().parent.parent
FAKE = ["--engine", "fake", "--model", "distilbert-sentiment-tiny", "--num-samples", "32"]


def run_cli(capsys, *argv):
    try:
        code = main(list(argv))
    except SystemExit as e:  # argparse errors
        code = e.code
    out = capsys.readouterr()
    return code, out.out + out.err


@pytest.mark.parametrize(
    "argv,expected",
    [
        (["--model", "bert-huge"], "unknown model 'bert-huge'"),
        (["--engine", "tensorflow"], "unknown engine 'tensorflow'"),
        (
            ["--engine", "triton", "--triton-url", "http://127.0.0.1:9", *FAKE[2:]],
            "Triton at http://127.0.0.1:9 is unreachable",
        ),
        (["--engine", "trt"], "--engine trt runs on cuda, but this machine is cpu"),
        (["--engine", "trt"], "tensorrt is not installed; TensorRT wheels come from NVIDIA"),
        (["--engine", "neuron"], "--engine neuron runs on neuron, but this machine is cpu"),
        (["--engine", "neuron"], "torch_neuronx is not installed; run on an inf2 instance"),
        (["--engine", "trt", "--hw", "l4"], "--hw l4 does not match this machine"),
        (
            ["--engine", "onnx", "--provider", "cuda", *FAKE[2:]],
            "--provider cuda runs on cuda, but this run is on cpu",
        ),
        (["--hw", "l4"], "--hw l4 does not match this machine: detected cpu"),
        (["--hw", "tpu"], "unknown --hw 'tpu'"),
        (
            ["--task", "embedding", "--model", "distilbert-sentiment"],
            "is a classification model but --task is embedding",
        ),
        (["--attn", "flash_attention_2"], "cpu cannot run flash-attention-2"),
        (["--precision", "fp16"], "does not support --precision fp16; use --precision bf16"),
        (
            ["--task", "vision-embedding", "--model", "colqwen2-tiny", "--engine", "onnx"]
            + [
                *"--dataset synthetic --inputs-per-request 1,2 --image-sizes 224x168,280x280".split(),
            ],
            "runs vision per fixed image-size bucket, one image size per batch",
        ),
        (
            ["--task", "vision-embedding", "--engine", "trt"],
            "does not run vision-embedding models (colqwen2): TensorRT is not supported",
        ),
        (
            ["--task", "vision-embedding", "--model", "colqwen2-tiny", "--engine", "fake"]
            + ["--image-sizes", "600x0"],
            "--image-sizes takes WIDTHxHEIGHT",
        ),
        (["--dataset", "missing.csv", *FAKE], "no such file"),
        (["--dataset", "org/unknown-dataset", *FAKE], "Hub is unreachable"),
        (["--inputs-per-request", "0,8"], "expected integers >= 1"),
        (["--inputs-per-request", "a,b"], "expected comma-separated integers"),
        (["--price-per-hour", "-1"], "expected a number > 0"),
        (["--precision", "int3"], "invalid choice: 'int3'"),
        ([*FAKE, "--num-samples", "0"], "--num-samples must be >= 1"),
    ],
)
def test_cli_errors_are_one_line_and_name_the_fix(capsys, tmp_path, argv, expected):
    code, out = run_cli(capsys, *argv, "--output-dir", str(tmp_path))
    assert code == 2
    assert expected in out
    assert "Traceback" not in out
    lines = [ln for ln in out.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, out


def test_missing_optional_dependency_names_the_extra():
    assert 'pip install -e ".[gpu]"' in str(MissingDependency("tensorrt", "gpu"))


def test_unwritable_output_dir_is_one_line(capsys, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, out = run_cli(capsys, *FAKE, "--output-dir", str(blocker / "sub"))
    assert code == 2 and "cannot create --output-dir" in out


def test_help_documents_every_flag(capsys):
    text = help_text(main, capsys)
    for flag in (
        *"--task --model --engine --hw --price-per-hour --inputs-per-request --n-models --workers-per-model --processes --duration --min-calls --output-dir --resume --fresh --precision --attn --dataset".split(),
    ):
        assert flag in text


def test_fake_run_prints_the_table_and_writes_rows(capsys, tmp_path):
    argv = [*FAKE, "--inputs-per-request", "1,4", "--duration", "0.3", "--min-calls", "2"]
    code, out = run_cli(capsys, *argv, "--output-dir", str(tmp_path))
    assert code == 0, out
    assert "engine=fake" in out and "$/1B" in out
    df = pd.read_parquet(tmp_path / "results.parquet")
    assert df["batch_size"].tolist() == [1, 4]
    assert (df["engine"] == "fake").all() and df["weights"].str.startswith("none").all()
    assert df["floor_1B_cost"].isna().all()  # no roofline claimed for an engine with no model
    assert (df["1B_cost"] > 0).all()
    # rerun: everything is resumed, nothing measured twice
    code, out = run_cli(capsys, *argv, "--output-dir", str(tmp_path))
    assert code == 0 and "already measured" in out
    assert len(pd.read_csv(tmp_path / "results.csv")) == 2


def test_eager_tiny_run_reports_floor_and_random_weights(capsys, tmp_path):
    code, out = run_cli(
        capsys,
        *"--model bge-base-tiny --task embedding --inputs-per-request 2 --duration 0.3 --min-calls 2 --output-dir".split(),
        str(tmp_path),
    )
    assert code == 0, out
    row = pd.read_csv(tmp_path / "results.csv").iloc[0]
    assert row["weights"] == "random" and row["model_name"] == "bge-base-tiny"
    assert 0 < row["efficiency"] <= 1.5 and row["floor_1B_cost"] > 0
    assert row["avg_num_vectors"] == 1 and row["invalid_embeddings"] == 0
    assert row["hw_type"] == "cpu" and row["mode"] == "inprocess"


def _cli(out_dir, batch_sizes):
    return [
        sys.executable,
        "-m",
        "harness.run",
        *FAKE,
        "--inputs-per-request",
        batch_sizes,
        *"--duration 0.4 --min-calls 1 --warmup 0 --output-dir".split(),
        str(out_dir),
    ]


def _rows(path: Path) -> int:
    try:
        return len(pd.read_csv(path))
    except (FileNotFoundError, pd.errors.EmptyDataError):
        return 0


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT])
def test_interrupted_sweep_keeps_rows_and_resumes_without_repeats(tmp_path, sig):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    sizes = list(range(1, 13))
    cmd = _cli(tmp_path, ",".join(map(str, sizes)))
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    csv = tmp_path / "results.csv"
    deadline = time.time() + 120
    while _rows(csv) < 2 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(sig)
    out, _ = proc.communicate(timeout=60)
    before = pd.read_csv(csv)
    assert len(before) >= 2, out  # the kill may land late on a busy machine: no upper bound
    if sig == signal.SIGINT and proc.returncode != 0:
        assert proc.returncode == 130 and "run the same command again to resume" in out
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    after = pd.read_csv(csv)
    assert sorted(after["batch_size"]) == sizes  # none lost, none repeated
    kept = after[after["config_key"].isin(before["config_key"])]
    assert kept["timestamp"].tolist() == before["timestamp"].tolist()  # not re-measured


def test_old_flag_names_still_work_and_say_their_new_name():
    """The one place the old names are used: each still sets its field, and the run notes it."""
    from core.config import config_from
    from harness.cli import renamed
    from harness.run import build_parser as run_parser
    from harness.scenarios.http import HttpConfig
    from harness.scenarios.inprocess import InprocessConfig
    from harness.sweep import build_parser as sweep_parser
    from serving.batcher import BatcherConfig

    ns = run_parser().parse_args(["--batch-sizes", "1,4"])
    assert config_from(InprocessConfig, ns).inputs_per_request == (1, 4)
    assert renamed(ns) == [
        "--batch-sizes is now --inputs-per-request; the old name works until the next release"
    ]
    old = ["--max-batch", "8", "--max-queue", "64", "--fifo"]
    ns = sweep_parser().parse_args(old)
    assert config_from(HttpConfig, ns).max_batch_sizes == (8,)
    batcher = config_from(BatcherConfig, ns)
    assert batcher.max_queue_inputs == 64 and batcher.length_aware is False
    notes = " ".join(renamed(ns))
    assert "--max-batch is now --max-batch-sizes" in notes
    assert "--max-queue is now --max-queue-inputs" in notes
