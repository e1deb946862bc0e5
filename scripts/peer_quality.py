"""Output quality of a running server on the run's own texts (scripts/bench_peers.sh).

    # check a server: its answers for a sample of the workload vs sentence-transformers fp32
    .venv/bin/python scripts/peer_quality.py check --url http://127.0.0.1:17997 \\
        --protocol openai --served-model all-minilm-l6 --model all-minilm-l6 \\
        --model-path DIR --num-samples 512 --out OUT/infinity-rep1/quality-32x1.json \\
        --label before --cache OUT/reference.npz
    # put the checks of that file (combined: worst min, all passed) into the point's rows
    .venv/bin/python scripts/peer_quality.py annotate --quality OUT/infinity-rep1/quality-32x1.json \\
        --results OUT/infinity-rep1 --vus 32 --inputs-per-request 1

The texts are the ones `harness.sweep` sends with the same `--model/--model-path/--dataset/
--num-samples/--seed` flags (its workload, rebuilt here); the reference model is `--reference`
(default: the model folder). Exit status 0 whether or not the server passed: the verdict is in
the file, the rows and the table; 2 on a usage error, 1 when the server could not be asked.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from core.config import config_from
from core.errors import BillionbenchError
from engines.models import get_spec, load_tokenizer
from harness import quality
from harness.cli import add_config
from harness.results import ResultsStore
from loadgen import Target
from workloads import WorkloadSpec, load_workload

log = logging.getLogger("billionbench")


def run_texts(args: argparse.Namespace) -> tuple[list[str], str]:
    """The workload harness.sweep builds from the same flags, and its source line."""
    spec = get_spec(args.model or args.model_path)
    tok = load_tokenizer(spec, args.model_path)
    wl = config_from(WorkloadSpec, args, task=args.task, seed=args.seed)
    workload = load_workload(wl, tok.tokenizer, args.max_seq_len or spec.max_seq_len)
    return workload.texts, workload.source


def reference_for(args: argparse.Namespace, picked: list[str]) -> quality.Reference:
    """The reference's answers for the sample, from --cache when it holds these texts."""
    cache = Path(args.cache) if args.cache else None
    if cache and cache.exists():
        ref = quality.Reference.load(cache)
        if ref.texts_sha == quality.texts_sha(picked) and ref.task == args.task:
            return ref
        log.warning("%s holds another sample's reference; computing it again", cache)
    ref = quality.reference_outputs(args.task, args.reference or args.model_path, picked)
    if cache:
        ref.save(cache)
    return ref


def check(args: argparse.Namespace) -> int:
    texts, source = run_texts(args)
    picked = quality.sample_texts(texts, args.sample)
    ref = reference_for(args, picked)
    target = Target(args.url, args.protocol, args.served_model, args.task, timeout_s=args.timeout)
    gate = quality.Gate(min_cosine=args.min_cosine, min_label_agreement=args.min_label_agreement)
    q = quality.check_endpoint(target, texts, ref, gate, sample=args.sample)
    out = Path(args.out)
    doc = json.loads(out.read_text()) if out.exists() else {}
    doc.update(
        url=args.url,
        protocol=args.protocol,
        served_model=args.served_model,
        dataset=source,
        texts=len(texts),
        sample_sha=quality.texts_sha(picked),
    )
    doc.setdefault("checks", {})[args.label] = q.as_dict()
    doc["combined"] = quality.combine(
        [quality.Quality.from_dict(c) for c in doc["checks"].values()]
    ).as_dict()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"{args.label}: {q.describe()}")
    return 0


def annotate(args: argparse.Namespace) -> int:
    doc = json.loads(Path(args.quality).read_text())
    q = quality.Quality.from_dict(doc["combined"])
    store = ResultsStore(args.results)
    where = {"vus": args.vus, "inputs_per_request": args.inputs_per_request}
    with store.writing("peer_quality annotate"):
        rows = store.read()
        match = rows[
            (rows["vus"] == args.vus) & (rows["inputs_per_request"] == args.inputs_per_request)
        ]
        if len(match) and doc.get("dataset") not in set(match["dataset"].astype(str)):
            print(
                f"{args.results}: its rows ran on {sorted(set(match['dataset']))}, the quality "
                f"check on {doc.get('dataset')}; not annotated",
                file=sys.stderr,
            )
            return 1
        n = store.annotate(q.columns(), where)
    print(f"{args.results}: quality in {n} row(s): {q.describe()}")
    return 0 if n else 1


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser("check", help="ask a server for a sample of the run's texts and compare")
    c.add_argument("--url", required=True)
    c.add_argument("--protocol", default="openai")
    c.add_argument("--served-model", default="", help="the model name the server answers to")
    c.add_argument("--task", default="embedding", choices=("embedding", "classification"))
    c.add_argument("--model", default=None, help="registry name (as harness.sweep --model)")
    c.add_argument("--model-path", default=None, help="model folder (as harness.sweep)")
    c.add_argument("--reference", default=None, help="reference model (default: --model-path)")
    add_config(c, WorkloadSpec, "the run's workload (as harness.sweep takes it)")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--max-seq-len", type=int, default=None)
    c.add_argument("--sample", type=int, default=quality.SAMPLE, help="texts compared")
    c.add_argument("--min-cosine", type=float, default=quality.MIN_COSINE)
    c.add_argument("--min-label-agreement", type=float, default=quality.MIN_LABEL_AGREEMENT)
    c.add_argument("--timeout", type=float, default=120.0, help="seconds per request")
    c.add_argument("--cache", default=None, help=".npz file: the reference, computed once")
    c.add_argument("--label", default="check", help="this check's name in --out (before, after)")
    c.add_argument("--out", required=True, help="quality JSON (checks are added to it)")
    c.set_defaults(func=check)
    a = sub.add_parser("annotate", help="write a quality JSON's combined result into rows")
    a.add_argument("--quality", required=True)
    a.add_argument("--results", required=True, help="the sweep's --output-dir")
    a.add_argument("--vus", type=int, required=True)
    a.add_argument("--inputs-per-request", type=int, required=True)
    a.set_defaults(func=annotate)
    return p


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    args = parser().parse_args(argv)
    if args.command == "check" and not (args.model or args.model_path):
        print("check needs --model or --model-path", file=sys.stderr)
        return 2
    if args.command == "check" and not (args.reference or args.model_path):
        print("check needs --reference (or --model-path, used as the reference)", file=sys.stderr)
        return 2
    try:
        return args.func(args)
    except BillionbenchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
