"""Benchmark: the transformers encoder backend of de-identification on MEDDOCAN (train -> dev), strict span P/R/F1 and MB/s.

Fine-tunes a token-classification model from a local encoder folder on MEDDOCAN train (or takes
an already trained one with --model), tags MEDDOCAN dev, and prints MEDDOCAN's measures
(medfactory.corpus.deid.evaluate: subtrack 1 strict per category and overall, subtrack 2, leak)
for the encoder alone and for rules + encoder (what `deid apply --encoder` runs), plus training
time, tagging speed (MB/s, one note at a time as `deid apply` does, and batched) and peak GPU
memory. Counts and scores only, never a span's text. Meant for a GPU VM with the encoder downloaded:

    huggingface-cli download PlanTL-GOB-ES/roberta-base-biomedical-clinical-es --local-dir models/rb-clin-es   # where the hub is reachable
    python benchmarks/deid_encoder.py --encoder models/rb-clin-es --epochs 4 --batch-size 16 --learning-rate 5e-5
    python benchmarks/deid_encoder.py --model /tmp/deid_encoder_meddocan            # score a model trained before
    python benchmarks/deid_encoder.py --encoder DIR --train-docs 20 --dev-docs 10 --max-steps 20 --device cpu   # a smoke run
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from medfactory.corpus.deid.brat import read_brat_folder
from medfactory.corpus.deid.encoder import DEFAULT_BATCH_SIZE, DEFAULT_EPOCHS, DEFAULT_LEARNING_RATE, DEFAULT_STRIDE, EncoderTagger
from medfactory.corpus.deid.evaluate import ScoredDocument, evaluate_documents, score_tables
from medfactory.corpus.deid.spans import PhiSpan

MEDDOCAN = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "meddocan"


def read_gold(folder: Path, limit: int | None) -> list[tuple[str, str, list[PhiSpan]]]:
    """(name, text, gold spans) of the first ``limit`` documents of a BRAT folder (all without a limit)."""
    documents = [(document.name, document.text, list(document.spans)) for document in read_brat_folder(folder, progress=False)]
    return documents[:limit] if limit else documents


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--encoder", type=Path, help="base encoder folder to fine-tune (a clinical RoBERTa / BERT with a fast tokenizer)")
    parser.add_argument("--model", type=Path, help="an encoder model folder trained before (`deid train --backend encoder`): skip training")
    parser.add_argument("--output", type=Path, default=Path("/tmp/deid_encoder_meddocan"), help="where to write the trained model folder")
    parser.add_argument("--meddocan", type=Path, default=MEDDOCAN)
    parser.add_argument("--train", type=Path, default=None, help="train BRAT folder (default: MEDDOCAN's train/)")
    parser.add_argument("--dev", type=Path, default=None, help="evaluation BRAT folder (default: MEDDOCAN's dev/)")
    parser.add_argument("--language", choices=("es", "pt"), default="es", help="language of the rules layer in rules + encoder")
    parser.add_argument("--train-docs", type=int, default=None)
    parser.add_argument("--dev-docs", type=int, default=None)
    parser.add_argument("--epochs", type=int, default=DEFAULT_EPOCHS)
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    parser.add_argument("--learning-rate", type=float, default=DEFAULT_LEARNING_RATE)
    parser.add_argument("--max-steps", type=int, default=None, help="stop after this many optimizer steps (a smoke run)")
    parser.add_argument("--max-length", type=int, default=None, help="tokens per window (default: the model's positions, at most 512)")
    parser.add_argument("--stride", type=int, default=DEFAULT_STRIDE, help="tokens shared by consecutive windows")
    parser.add_argument("--device", default="auto", help="auto (cuda when available), cuda, cuda:N or cpu")
    parser.add_argument("--json", type=Path, default=None, help="also write the scores and timings here")
    args = parser.parse_args()
    if (args.encoder is None) == (args.model is None):
        parser.error("pass exactly one of --encoder BASE_DIR (train, then score) and --model MODEL_DIR (score only)")
    return args


def train(args: argparse.Namespace, train_folder: Path) -> dict[str, Any]:
    documents = [(text, spans) for _, text, spans in read_gold(train_folder, args.train_docs)]
    facts = EncoderTagger.train(
        documents, args.encoder, args.output, epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.learning_rate,
        device=args.device, max_length=args.max_length, stride=args.stride, max_steps=args.max_steps,
    )  # fmt: skip
    print(f"trained on {facts['documents']} documents ({facts['windows']} windows of {facts['max_length']} tokens, stride {facts['stride']}, "
          f"{facts['spans']} spans): {facts['steps']} steps on {facts['device']} in {facts['train_seconds']} s, final loss {facts['final_loss']}")  # fmt: skip
    return facts


def speed(tagger: EncoderTagger, texts: list[str]) -> dict[str, float]:
    """MB/s tagging one note per call (as `deid apply`) and all notes batched together (windows of several notes per forward pass)."""
    megabytes = sum(len(text.encode("utf-8")) for text in texts) / 1e6
    started = time.perf_counter()
    for text in texts:
        tagger.find(text)
    per_note = time.perf_counter() - started
    started = time.perf_counter()
    tagger.find_many(texts)
    batched = time.perf_counter() - started
    return {"megabytes": round(megabytes, 3), "per_note_mb_s": round(megabytes / per_note, 4), "batched_mb_s": round(megabytes / batched, 4)}


def scores_of(dev: list[tuple[str, str, list[PhiSpan]]], found: list[list[PhiSpan]]) -> dict[str, Any]:
    return evaluate_documents(ScoredDocument(name, text, gold, spans) for (name, text, gold), spans in zip(dev, found, strict=True))


def headline(title: str, scores: dict[str, Any]) -> str:
    overall = scores["subtrack1_ner"]
    return f"{title}: strict P {overall['precision']:.4f} R {overall['recall']:.4f} F1 {overall['f1']:.4f} (TP {overall['tp']:,} of {overall['gold']:,} gold)"


def device_facts(tagger: EncoderTagger) -> dict[str, Any]:
    import torch

    facts: dict[str, Any] = {"device": tagger.device, "torch_threads": torch.get_num_threads()}
    if tagger.device.startswith("cuda"):
        facts["gpu"] = torch.cuda.get_device_name(tagger.device)
        facts["peak_gpu_memory_gib"] = round(torch.cuda.max_memory_allocated(tagger.device) / 2**30, 2)
    return facts


def main() -> int:
    args = parse_args()
    train_folder, dev_folder = args.train or args.meddocan / "train", args.dev or args.meddocan / "dev"
    if not dev_folder.is_dir() or (args.model is None and not train_folder.is_dir()):
        print(f"{train_folder} or {dev_folder} is not a folder (BRAT .txt + .ann expected); pass --meddocan DIR or --train / --dev.", file=sys.stderr)
        return 1
    results: dict[str, Any] = {"training": train(args, train_folder) if args.model is None else None}
    model = args.model or args.output
    tagger = EncoderTagger(model, device=args.device, max_length=args.max_length)
    dev = read_gold(dev_folder, args.dev_docs)
    results["speed"] = speed(tagger, [text for _, text, _ in dev])
    results["encoder"] = scores_of(dev, tagger.find_many([text for _, text, _ in dev]))
    from medfactory.corpus.deid.deidentifier import Deidentifier

    results["device"] = device_facts(tagger)
    del tagger  # the Deidentifier loads its own copy (on the automatic device: cuda when visible)
    deidentifier = Deidentifier(args.language, encoder=model)
    results["rules_encoder"] = scores_of(dev, [deidentifier.find(text) for _, text, _ in dev])
    print(f"\n{dev_folder}: {len(dev)} documents, {results['speed']['megabytes']} MB; model {model}; {results['device']}")
    print(f"speed: {results['speed']['per_note_mb_s']} MB/s one note per call, {results['speed']['batched_mb_s']} MB/s batched")
    print(headline("encoder alone", results["encoder"]))
    print(headline("rules + encoder (deid apply --encoder)", results["rules_encoder"]))
    print("\nrules + encoder, per category (subtrack 1 strict):\n")
    print(score_tables(results["rules_encoder"]))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
