"""The rounds engine's join and refusals without a model (the end-to-end rounds run in test_generate_qa.py and
test_clinical_cases.py): pending requests become a registered set with their cache keys, a predict run's replies go
into the cache under them, and replies of another round, another owner's folder or a stray flag are refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer

from medfactory.base.errors import CorpusError
from medfactory.generate.client import ChatRequest
from medfactory.generate.endpoint_options import predict_rounds
from medfactory.generate.predict_rounds import PENDING, RoundsClient, round_name, store_round, write_round

SECRET = "Paciente con disnea súbita"  # stands for clinical text: never in a message


def requests() -> list[ChatRequest]:
    system = {"role": "system", "content": "Eres un evaluador."}
    return [ChatRequest(f"r{n}", [system, {"role": "user", "content": f"{SECRET} {n}"}], 0.0, 16) for n in range(3)]


def predictions(path: Path, replies: list[str], prompts: list[str]) -> Path:
    path.write_text("".join(json.dumps({"prompt": p, "predict": r, "label": ""}) + "\n" for p, r in zip(prompts, replies, strict=True)), encoding="utf-8")
    return path


def test_pending_requests_round_trip_through_the_registered_set_and_the_cache(tmp_path: Path) -> None:
    (tmp_path / "dataset_info.json").write_text("{}", encoding="utf-8")
    cache = tmp_path / "cache.jsonl"
    client = RoundsClient(cache, "judge")
    first = list(client.complete([*requests(), requests()[0]]))  # the first request asked twice is predicted once
    client.close()
    assert [c.failure for c in first] == [PENDING] * 4 and len(client.pending) == 4
    manifest = write_round(tmp_path, "study", "eval cases", client.pending, tmp_path / "items.jsonl")
    folder = tmp_path / "data" / round_name("study")
    rows = [json.loads(line) for line in (folder / "requests.jsonl").read_text(encoding="utf-8").splitlines()]
    assert manifest["requests"] == len(rows) == 3 and rows[0]["system"] == "Eres un evaluador."
    assert rows[0]["messages"] == [{"role": "user", "content": f"{SECRET} 0"}, {"role": "assistant", "content": ""}]
    assert json.loads((folder / "keys.json").read_text()) == [r.cache_key("judge") for r in requests()]
    registry = json.loads((tmp_path / "dataset_info.json").read_text(encoding="utf-8"))
    assert registry["study_round"]["formatting"] == "sharegpt" and registry["study_round"]["columns"]["system"] == "system"
    assert SECRET not in (folder / "manifest.json").read_text(encoding="utf-8")

    prompts = [f"Eres un evaluador.{SECRET} {n}" for n in range(3)]  # what template `empty` renders: system, then the turn
    assert store_round(tmp_path, "study", predictions(tmp_path / "p.jsonl", ["a", "b", "c"], prompts), cache) == 3
    again = RoundsClient(cache, "judge")
    second = list(again.complete(requests()))
    again.close()
    assert [c.text for c in second] == ["a", "b", "c"] and all(c.cached for c in second) and not again.pending
    again.raise_if_pending()  # nothing pending: the step may publish


def test_replies_of_another_round_are_refused_naming_the_line_not_the_text(tmp_path: Path) -> None:
    (tmp_path / "dataset_info.json").write_text("{}", encoding="utf-8")
    client = RoundsClient(tmp_path / "cache.jsonl", "judge")
    list(client.complete(requests()))
    client.close()
    write_round(tmp_path, "study", "eval cases", client.pending, tmp_path / "items.jsonl")
    shuffled = predictions(tmp_path / "p.jsonl", ["a", "b", "c"], [f"{SECRET} {n}" for n in (0, 2, 1)])
    with pytest.raises(CorpusError, match=r"p.jsonl, line 2: its prompt does not hold request 2") as error:
        store_round(tmp_path, "study", shuffled, tmp_path / "cache.jsonl")
    assert SECRET not in str(error.value)
    short = predictions(tmp_path / "short.jsonl", ["a"], [f"{SECRET} 0"])
    with pytest.raises(CorpusError, match=r"1 rows for the 3 requests"):
        store_round(tmp_path, "study", short, tmp_path / "cache.jsonl")
    with pytest.raises(CorpusError, match=r"no readable predict round"):
        store_round(tmp_path, "other", short, tmp_path / "cache.jsonl")


def test_a_round_never_replaces_another_owners_folder(tmp_path: Path) -> None:
    (tmp_path / "dataset_info.json").write_text("{}", encoding="utf-8")
    other = tmp_path / "data" / "study_round"
    other.mkdir(parents=True)
    (other / "manifest.json").write_text(json.dumps({"corpus": "notes", "plugin": "notes"}), encoding="utf-8")
    (other / "train.jsonl").write_text("{}\n", encoding="utf-8")
    client = RoundsClient(tmp_path / "cache.jsonl", "judge")
    list(client.complete(requests()))
    client.close()
    with pytest.raises(CorpusError, match="already holds a dataset"):
        write_round(tmp_path, "study", "eval cases", client.pending, tmp_path / "items.jsonl")
    assert (other / "train.jsonl").read_text() == "{}\n"


def test_engine_flags_are_checked() -> None:
    assert predict_rounds("predict", None) and not predict_rounds("served", None)
    with pytest.raises(typer.BadParameter, match="not one of served, predict"):
        predict_rounds("vllm", None)
    with pytest.raises(typer.BadParameter, match="with --engine predict"):
        predict_rounds("served", Path("p.jsonl"))
