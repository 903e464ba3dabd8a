#!/usr/bin/env python3
"""Cross-check `micse export` in PyTorch: the hf export through transformers and the sentence-transformers export
through sentence-transformers must give the [CLS] vectors `micse embed` wrote.

Needs: python3 with numpy, torch, transformers, sentence-transformers (not installed by this project).

    npx micse export --checkpoint RUN_DIR --output exported           # hf/ and sentence-transformers/ among others
    npx micse embed --model RUN_DIR --input sentences.txt --output micse.npy
    python3 bench/check-export.py --export exported --sentences sentences.txt --npy micse.npy

--hf DIR / --st DIR point at the two folders directly (e.g. after `--format hf`). Prints max |diff| and the smallest
cosine per library; exits 1 when a difference exceeds --tolerance (default 1e-4, the float32 agreement the
TypeScript tests hold onnxruntime and transformers.js to) or when transformers reports missing/unexpected weights.
"""
import argparse
import os
import sys

import numpy as np


def read_sentences(path):
    # `micse embed` on a .txt skips blank lines; do the same so the rows line up with the .npy.
    with open(path, encoding="utf-8") as f:
        return [line.rstrip("\r\n") for line in f if line.strip() != ""]


def compare(name, got, ref, tolerance):
    got = np.asarray(got, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    if got.shape != ref.shape:
        print(f"{name}: shape {got.shape} != micse {ref.shape}")
        return False
    max_abs = float(np.abs(got - ref).max())
    cos = (got * ref).sum(1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(ref, axis=1))
    ok = max_abs <= tolerance
    print(f"{name}: max |diff| {max_abs:.3e}, min cosine {cos.min():.7f} over {len(ref)} sentences -> {'OK' if ok else 'FAIL'}")
    return ok


def transformers_cls(path, sentences, batch_size):
    import torch
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    model, info = AutoModel.from_pretrained(path, output_loading_info=True)
    model.eval()
    clean = not info["missing_keys"] and not info["unexpected_keys"]
    if not clean:
        print(f"transformers: missing {info['missing_keys']}, unexpected {info['unexpected_keys']}")
    out = []
    with torch.no_grad():
        for i in range(0, len(sentences), batch_size):
            batch = tokenizer(sentences[i:i + batch_size], padding=True, truncation=True, return_tensors="pt")
            out.append(model(**batch).last_hidden_state[:, 0].float().numpy())
    return np.concatenate(out), clean


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--export", help="output of `micse export` with all formats (has hf/ and sentence-transformers/)")
    ap.add_argument("--hf", help="the hf export folder")
    ap.add_argument("--st", help="the sentence-transformers export folder")
    ap.add_argument("--sentences", required=True, help="the .txt given to `micse embed --input`")
    ap.add_argument("--npy", required=True, help="the .npy written by `micse embed --output` (default pooler)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--tolerance", type=float, default=1e-4)
    args = ap.parse_args()

    hf = args.hf or (os.path.join(args.export, "hf") if args.export else None)
    st = args.st or (os.path.join(args.export, "sentence-transformers") if args.export else None)
    if hf is None and st is None:
        ap.error("pass --export, or --hf and/or --st")
    sentences = read_sentences(args.sentences)
    ref = np.load(args.npy)
    if ref.shape[0] != len(sentences):
        sys.exit(f"{args.npy} has {ref.shape[0]} rows but {args.sentences} has {len(sentences)} non-blank lines")

    ok = True
    if hf is not None:
        got, clean = transformers_cls(hf, sentences, args.batch_size)
        ok &= compare(f"transformers ({hf})", got, ref, args.tolerance) and clean
    if st is not None:
        from sentence_transformers import SentenceTransformer

        model = SentenceTransformer(st, device="cpu")
        print(f"sentence-transformers modules: {[type(m).__name__ for m in model]}; pooling: {model[1].get_pooling_mode_str()}")
        got = model.encode(sentences, batch_size=args.batch_size, convert_to_numpy=True)
        ok &= compare(f"sentence-transformers ({st})", got, ref, args.tolerance)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
