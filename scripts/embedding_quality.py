"""Min / mean cosine of artifacts' embeddings against eager fp32, on a synthetic and a file text set.

    python scripts/embedding_quality.py --model all-minilm-l6 --model-path DIR \
        --texts /tmp/prose.jsonl --n 256 \
        --artifact onnx:int8:static:artifacts/.../onnx-int8-static-cpu \
        --artifact openvino:int8::artifacts/.../openvino-int8-cpu

Each --artifact is ENGINE:PRECISION:VARIANT:FOLDER. The synthetic set is the harness's default
embedding workload shape (normal(144, 14) tokens); the file set is the first --n texts of a
.jsonl with a "text" field (scripts/prose_texts.py writes one). Prints one CSV line per
artifact and set.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engines.registry import create_engine, engine_config  # noqa: E402
from engines.textgen import texts_with_token_counts  # noqa: E402


def embed(engine, texts: list[str], batch: int = 16) -> np.ndarray:
    return np.concatenate(
        [engine.predict(texts[i : i + batch]).values for i in range(0, len(texts), batch)]
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="all-minilm-l6")
    p.add_argument("--model-path", default=None)
    p.add_argument("--texts", required=True, help=".jsonl with a 'text' field")
    p.add_argument("--n", type=int, default=256)
    p.add_argument("--artifact", action="append", required=True)
    args = p.parse_args(argv)
    common = dict(model_path=args.model_path, weights="auto")
    with create_engine(engine_config("eager", args.model, **common)) as ref:
        tok = ref.pipeline.tokenizer
        rng = np.random.default_rng(0)
        counts = np.clip(np.rint(rng.normal(144, 14, args.n)), 8, 256).astype(int)
        lines = Path(args.texts).read_text().splitlines()[: args.n]
        sets = {
            "synthetic": texts_with_token_counts(tok, [int(c) for c in counts], seed=1),
            Path(args.texts).name: [json.loads(line)["text"] for line in lines],
        }
        refs = {name: embed(ref, texts) for name, texts in sets.items()}
    print("engine,precision,variant,texts,n,min_cosine,mean_cosine")
    for spec in args.artifact:
        engine, precision, variant, folder = spec.split(":", 3)
        cfg = engine_config(
            engine, args.model, precision=precision, variant=variant, artifact=folder, **common
        )
        with create_engine(cfg) as cand:
            for name, texts in sets.items():
                got = embed(cand, texts)
                cos = (got * refs[name]).sum(-1)  # both unit vectors
                print(
                    f"{engine},{precision},{variant},{name},{len(texts)},"
                    f"{cos.min():.5f},{cos.mean():.5f}",
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
