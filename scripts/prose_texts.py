"""Write a .jsonl text workload of real English prose, different in vocabulary from the synthetic
workloads: paragraphs of the package descriptions (METADATA) installed in this environment.

    python scripts/prose_texts.py --out /tmp/prose.jsonl [--n 512] [--seed 0]

The texts depend on the installed packages, so the file's sha256 and the package count are
printed; a run that uses it should record them. Nothing here is downloaded.
"""

from __future__ import annotations

import argparse
import email
import hashlib
import json
import random
import re
import sys
import sysconfig
from pathlib import Path

WORD = re.compile(r"[A-Za-z]{2,}")


def paragraphs(site: Path) -> tuple[list[str], int]:
    """Prose paragraphs (mostly words, no code or tables) from every METADATA under `site`."""
    out, packages = [], 0
    for meta in sorted(site.glob("*.dist-info/METADATA")):
        body = email.message_from_string(meta.read_text(errors="ignore")).get_payload()
        if not isinstance(body, str) or not body.strip():
            continue
        packages += 1
        for block in re.split(r"\n\s*\n", body):
            text = " ".join(block.split())
            words = text.split()
            if len(words) < 8 or text.startswith(("```", "|", ">>>", "$ ", "    ")):
                continue
            if sum(bool(WORD.fullmatch(w.strip(".,;:()!?'\""))) for w in words) < 0.7 * len(words):
                continue
            out.append(text)
    return out, packages


def texts(paras: list[str], n: int, seed: int) -> list[str]:
    """`n` texts of 10-200 words each, consecutive paragraphs joined and cut to length."""
    rng = random.Random(seed)
    out = []
    while len(out) < n:
        start = rng.randrange(len(paras))
        target = rng.randint(10, 200)
        words: list[str] = []
        for p in paras[start:]:
            words += p.split()
            if len(words) >= target:
                break
        out.append(" ".join(words[:target]))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--n", type=int, default=512)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--site-packages", default=sysconfig.get_paths()["purelib"])
    args = p.parse_args(argv)
    paras, packages = paragraphs(Path(args.site_packages))
    if not paras:
        print(f"no package descriptions under {args.site_packages}", file=sys.stderr)
        return 2
    body = "".join(json.dumps({"text": t}) + "\n" for t in texts(paras, args.n, args.seed))
    Path(args.out).write_text(body)
    digest = hashlib.sha256(body.encode()).hexdigest()
    print(f"{args.out}: {args.n} texts from {len(paras)} paragraphs of {packages} packages")
    print(f"sha256 {digest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
