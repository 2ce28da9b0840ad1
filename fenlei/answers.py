"""The answer format of generative classifiers: how an answer is written, tokenized, scored and parsed back.

An answer is built from separately tokenized pieces, so training targets and label scoring use the very same ids
(BPE merges cannot cross a piece boundary)::

    {"category": "  <label ids>  "  , "urgency": "  <label ids>  "  }  <eos>
    `- opener 0 -'                 `-- opener 1 --'                 `- closer

    classify(category="  <label ids>  "  , urgency="  <label ids>  "  )  <eos>      (answer_format: call)

Every label is scored together with the closing quote that follows it, so no label is a prefix of another
(``"1"`` vs ``"11"``: without the quote, ``"11"`` could never beat ``"1"``).

Shared by the prompt DataModule (which builds the spec from its tokenizer) and the generative classifier (which
stores it in checkpoints, scores and parses answers with it). Pure Python: the tokenizer is passed in.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from typing import Any, Literal, Optional

from fenlei.errors import FenleiError

AnswerFormat = Literal["json", "call"]


class AnswerFormatError(FenleiError, ValueError):
    """An answer format that cannot be written or scored (a field or function name, a label's tokens)."""


@dataclass
class AnswerSpec:
    """Everything needed to build, score and parse answers; plain data, stored in the model's checkpoint."""

    fields: list[str]  # data field names, first = primary (its metrics drive checkpointing)
    names: list[str]  # names shown in the prompt and used as JSON keys
    labels: list[list[str]]  # allowed values per field, class-id order
    openers: list[list[int]]  # ids before each field's value
    closer: list[int]  # ids after the last value (before EOS)
    quote: list[int]  # ids of the closing quote that ends every value
    label_ids: list[list[list[int]]]  # per field, per label: the value's ids (without the quote)
    eos_id: Optional[int]
    format: str = "json"  # "json" or "call" (specs stored before the call format have no entry: json)
    function: str = ""  # the called function's name for "call"

    def scored_ids(self, field: int) -> list[list[int]]:
        """Label sequences scored for ``field``: value ids + closing quote (prefix-free)."""
        return [ids + self.quote for ids in self.label_ids[field]]

    def answer_ids(self, choice: list[int]) -> list[int]:
        out: list[int] = []
        for k, c in enumerate(choice):
            out += self.openers[k] + self.label_ids[k][c] + self.quote
        out += self.closer
        if self.eos_id is not None:
            out.append(self.eos_id)
        return out

    def prefix_ids(self, choice: list[int], field: int) -> list[int]:
        """Answer ids up to the value of ``field`` (values of the earlier fields as chosen)."""
        out: list[int] = []
        for k in range(field):
            out += self.openers[k] + self.label_ids[k][choice[k]] + self.quote
        return out + self.openers[field]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AnswerSpec:
        return cls(**data)


def build_answer_spec(tokenizer: Any, fields: list[str], names: list[str], labels: list[list[str]],
                      answer_format: AnswerFormat = "json", function: str = "classify") -> AnswerSpec:
    def ids(text: str) -> list[int]:
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])

    if answer_format == "json":
        openers = [ids('{"' + names[0] + '": "')] + [ids(', "' + n + '": "') for n in names[1:]]
        quote, closer = ids('"'), ids("}")
    elif answer_format == "call":
        if not function.isidentifier():
            raise AnswerFormatError(f"function_name {function!r} is not an identifier")
        bad = [n for n in names if not n.isidentifier()]
        if bad:
            raise AnswerFormatError(f"answer_format call: field names {bad} are not identifiers (set field_names)")
        openers = [ids(function + "(" + names[0] + '="')] + [ids(", " + n + '="') for n in names[1:]]
        quote, closer = ids('"'), ids(")")
    else:
        raise AnswerFormatError(f"unknown answer_format {answer_format!r}; choose json or call")
    label_ids = []
    for k, values in enumerate(labels):
        per = [ids(v) for v in values]
        seen: dict[tuple[int, ...], str] = {}
        for value, seq in zip(values, per, strict=True):
            if not seq:
                raise AnswerFormatError(f"field {fields[k]!r}: label {value!r} tokenizes to nothing")
            if tuple(seq) in seen:
                raise AnswerFormatError(
                    f"field {fields[k]!r}: labels {seen[tuple(seq)]!r} and {value!r} tokenize identically")
            seen[tuple(seq)] = value
        label_ids.append(per)
    return AnswerSpec(list(fields), list(names), [list(v) for v in labels], openers, closer, quote, label_ids,
                      tokenizer.eos_token_id, answer_format, function if answer_format == "call" else "")


def parse_answer(text: str, spec: AnswerSpec) -> list[Optional[str]]:
    """Field values from generated text.

    JSON format: the first JSON object. Call format: the ``name="value"`` arguments of the first
    ``function(...)`` call. Otherwise (either format) a ``name: value`` / ``name="value"`` regex per field.
    ``None`` = the field could not be parsed (a parse failure); a returned value may still be outside the label
    set (a hallucination) - the caller decides.
    """
    if spec.format == "call":
        call = re.search(re.escape(spec.function) + r"\s*\((.*?)\)", text, flags=re.S)
        if call:
            args = {m.group(1): m.group(2).strip() for m in re.finditer(r'(\w+)\s*=\s*"([^"]*)"', call.group(1))}
            if args:
                return [args.get(n) for n in spec.names]
    start = text.find("{")
    if spec.format == "json" and start >= 0:
        end = text.find("}", start)
        if end >= 0:
            try:
                obj = json.loads(text[start : end + 1])
                if isinstance(obj, dict):
                    obj = {str(k).strip(): v for k, v in obj.items()}
                    return [None if obj.get(n) is None else str(obj.get(n)).strip() for n in spec.names]
            except json.JSONDecodeError:
                pass
    out: list[Optional[str]] = []
    for name in spec.names:
        ends = '",)\n' if spec.format == "call" else '",}\n'  # what ends an unquoted value
        match = re.search(r'"?\s*' + re.escape(name) + r'\s*"?\s*[:=]\s*"?([^' + ends + ']*)', text)
        out.append(match.group(1).strip() if match and match.group(1).strip() else None)
    return out
