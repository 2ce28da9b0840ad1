"""The HTTP service through FastAPI's TestClient (bad requests included) and `infer` on files with bad rows."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from fenlei.serving.infer import main as infer_main
from fenlei.serving.serve import create_app
from tests.conftest import fenlei_user_error
from tests.deploy_support import tiny_bundle


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path, tiny_data: Path) -> Path:
    return tiny_bundle(tmp_path_factory, tiny_model, tiny_data)


@pytest.fixture(scope="module")
def client(bundle: Path) -> TestClient:
    return TestClient(create_app(bundle, max_chars=40, max_items=3), raise_server_exceptions=False)


def test_predict_one_and_many(client: TestClient) -> None:
    r = client.post("/predict", json={"text": "refund my card please"})
    assert r.status_code == 200
    body = r.json()
    assert body["precision"] == "int8" and len(body["predictions"]) == 1
    p = body["predictions"][0]
    assert p["predicted_label"] == "billing" and len(p["top_k"]) == 4  # default top_k 5, capped at 4 labels
    r = client.post("/predict", json={"texts": ["courier late", "password reset"], "top_k": 1})
    assert [p["predicted_label"] for p in r.json()["predictions"]] == ["shipping", "login"]
    assert all(len(p["top_k"]) == 1 for p in r.json()["predictions"])


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({}, "exactly one of 'text'"),
        ({"text": "a", "texts": ["b"]}, "exactly one of 'text'"),
        ({"text": ""}, "text is empty"),
        ({"text": "   "}, "text is empty"),
        ({"texts": ["ok", " "]}, "texts[1] is empty"),
        ({"text": "x" * 41}, "too long: 41 characters > 40"),
        ({"texts": ["a", "b", "c", "d"]}, "too many texts: 4 > 3"),
        ({"texts": []}, "texts is empty"),
        ({"text": 5}, "valid string"),
        ({"text": None}, "exactly one of 'text'"),
        ({"text": "a", "top_k": 0}, "greater than or equal to 1"),
        ({"text": "a", "top_k": 9}, "less than or equal to 4"),
        ({"text": "a", "extra": 1}, "Extra inputs"),
        ([1, 2], "valid dictionary"),
    ],
)
def test_bad_requests_are_422_with_a_message(client: TestClient, body: object, message: str) -> None:
    r = client.post("/predict", json=body)
    assert r.status_code == 422, r.text
    assert message in json.dumps(r.json())


def test_malformed_bodies_are_4xx(client: TestClient) -> None:
    for content, ctype in [(b"{not json", "application/json"), (b"hello", "text/plain"), (b"", "application/json")]:
        r = client.post("/predict", content=content, headers={"content-type": ctype})
        assert 400 <= r.status_code < 500, (content, r.status_code)
    assert client.get("/predict").status_code == 405


def test_health_metadata_openapi(client: TestClient, bundle: Path) -> None:
    assert client.get("/health").json()["status"] == "ok"
    meta = client.get("/metadata").json()
    assert meta["labels"] == ["billing", "bug", "login", "shipping"]
    assert {"max_chars": 40, "max_items": 3}.items() <= meta["limits"].items()
    assert meta["export"]["parity"]["passed"] and len(meta["thresholds"]) == 4
    assert meta["bundle"] == bundle.name and str(bundle.parent) not in json.dumps(meta)  # names, not paths
    assert client.get("/openapi.json").status_code == 404  # off unless asked
    schema = TestClient(create_app(bundle, docs=True)).get("/openapi.json").json()
    assert "/predict" in schema["paths"] and "PredictResponse" in json.dumps(schema)


def test_infer_reports_bad_rows_and_keeps_one_row_per_input(bundle: Path, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    lines = ['{"id": 1, "text": "refund my card"}', "", '{"id": 2, "text": ""}', "not json", "[1, 2]",
             '{"id": 3}', '{"id": 4, "text": null}', '{"id": 5, "text": "courier late"}']
    src = tmp_path / "in.jsonl"
    src.write_bytes(("\n".join(lines) + "\n").encode() + b'{"id": 6, "text": "\xff"}\n')
    out = tmp_path / "out.jsonl"
    assert infer_main(["--bundle", str(bundle), "--input", str(src), "--output", str(out), "--batch_size", "2",
                       "--no_progress"]) == 1
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["line"] for r in rows] == [1, 3, 4, 5, 6, 7, 8, 9]  # the blank line 2 is not a row
    assert [r.get("id") for r in rows] == [1, None, None, None, None, None, 5, None]
    assert rows[0]["predicted_label"] == "billing" and rows[6]["predicted_label"] == "shipping"
    assert [("error" in r) for r in rows] == [False, True, True, True, True, True, False, True]
    err = capsys.readouterr().err
    for expected in [f"{src}:3: empty text", f"{src}:4: malformed JSON", f"{src}:5: expected a JSON object",
                     f"{src}:6: missing field 'text'", f"{src}:7: field 'text' must be", f"{src}:9: not valid UTF-8",
                     "8 rows", "2 predicted, 6 malformed"]:
        assert expected in err


def test_infer_csv_and_refusals(bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "in.csv"
    src.write_text('id,body\n1,"refund, card"\n2,a,b\n3,courier late\n')
    out = tmp_path / "out.jsonl"
    assert infer_main(["--bundle", str(bundle), "--input", str(src), "--output", str(out), "--text_field", "body",
                       "--top_k", "1"]) == 1
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["line"] for r in rows] == [2, 3, 4] and "more cells" in rows[1]["error"]
    assert rows[0]["id"] == "1" and len(rows[0]["top_k"]) == 1
    error = fenlei_user_error(["infer", "--bundle", str(bundle), "--input", str(src), "--output", str(src)], capsys)
    assert f"{src}: output is the input file; refusing to overwrite it" in error
    out2 = tmp_path / "never.jsonl"
    error = fenlei_user_error(["infer", "--bundle", str(tmp_path / "nope"), "--input", str(src), "--output", str(out2)],
                              capsys)
    assert str(tmp_path / "nope") in error
    assert not out2.exists() and not list(tmp_path.glob(".never*"))
    for option in ("--batch_size", "--top_k"):
        error = fenlei_user_error(["infer", "--bundle", str(bundle), "--input", str(src), "--output", str(out2),
                                   option, "0"], capsys)
        assert error == "fenlei: error: --batch_size and --top_k must be >= 1"
    missing = tmp_path / "missing.jsonl"
    error = fenlei_user_error(["infer", "--bundle", str(bundle), "--input", str(missing), "--output", str(out2)], capsys)
    assert error == f"fenlei: error: {missing}: no such file"
