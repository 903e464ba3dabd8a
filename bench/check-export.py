#!/usr/bin/env python3
"""Cross-check `micse export` in Python: the hf export through transformers, the sentence-transformers export
through sentence-transformers and the onnx export through onnxruntime must give the [CLS] vectors `micse embed` wrote.

Needs: python3 with numpy, torch, transformers, sentence-transformers, and onnxruntime for the onnx export (not
installed by this project). bench/device/run.sh runs it on the GPU machine, whose python3 has all of them.

    npx micse export --checkpoint RUN_DIR --output exported           # hf/ and sentence-transformers/ among others
    npx micse embed --model RUN_DIR --input sentences.txt --output micse.npy
    python3 bench/check-export.py --export exported --sentences sentences.txt --npy micse.npy

--hf DIR / --st DIR / --onnx DIR point at the folders directly (e.g. after `--format hf`); with --export, an onnx/
folder is checked when it is there and onnxruntime imports (else skipped with the reason). Prints max |diff| and the smallest
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


def onnx_cls(path, sentences, batch_size):
    """[CLS] of last_hidden_state from the transformers.js layout (DIR/onnx/model.onnx) or DIR/model.onnx."""
    import onnxruntime as ort
    from transformers import AutoTokenizer

    model = next((p for p in (os.path.join(path, "onnx", "model.onnx"), os.path.join(path, "model.onnx")) if os.path.exists(p)), None)
    if model is None:
        sys.exit(f"no onnx/model.onnx or model.onnx in {path}")
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    names = {i.name for i in session.get_inputs()}
    tokenizer = AutoTokenizer.from_pretrained(path)
    out = []
    for i in range(0, len(sentences), batch_size):
        batch = tokenizer(sentences[i:i + batch_size], padding=True, truncation=True, return_tensors="np")
        feed = {k: v.astype(np.int64) for k, v in batch.items() if k in names}
        (hidden,) = session.run(["last_hidden_state"], feed)
        out.append(hidden[:, 0])
    return np.concatenate(out), f"onnxruntime {ort.__version__} ({os.path.relpath(model, path)})"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--export", help="output of `micse export` with all formats (has hf/ and sentence-transformers/)")
    ap.add_argument("--hf", help="the hf export folder")
    ap.add_argument("--st", help="the sentence-transformers export folder")
    ap.add_argument("--onnx", help="the onnx export folder (transformers.js layout)")
    ap.add_argument("--sentences", required=True, help="the .txt given to `micse embed --input`")
    ap.add_argument("--npy", required=True, help="the .npy written by `micse embed --output` (default pooler)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--tolerance", type=float, default=1e-4)
    args = ap.parse_args()

    hf = args.hf or (os.path.join(args.export, "hf") if args.export else None)
    st = args.st or (os.path.join(args.export, "sentence-transformers") if args.export else None)
    onnx = args.onnx
    if onnx is None and args.export and os.path.isdir(os.path.join(args.export, "onnx")):
        try:
            import onnxruntime  # noqa: F401 - only asks whether it imports
            onnx = os.path.join(args.export, "onnx")
        except ImportError as err:
            print(f"onnx: skipped ({err})")
    if hf is None and st is None and onnx is None:
        ap.error("pass --export, or --hf, --st and/or --onnx")
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
        pooling = getattr(model[1], "get_pooling_mode_str", None)  # a Pooling method in sentence-transformers <= 5
        print(f"sentence-transformers modules: {[type(m).__name__ for m in model]}"
              + (f"; pooling: {pooling()}" if callable(pooling) else ""))
        got = model.encode(sentences, batch_size=args.batch_size, convert_to_numpy=True)
        ok &= compare(f"sentence-transformers ({st})", got, ref, args.tolerance)
    if onnx is not None:
        got, what = onnx_cls(onnx, sentences, args.batch_size)
        ok &= compare(f"{what} ({onnx})", got, ref, args.tolerance)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
