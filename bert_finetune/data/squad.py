"""SQuAD v1.1 / v2.0 JSON files read the way run_squad.py read them.

`read_squad_examples` splits each context on whitespace into `doc_tokens` with a char -> word map,
maps the answer's character offset to word positions, and (training) skips the answers whose text
cannot be recovered from those words, with a warning, as the original did. Every question of the
same paragraph shares one `doc_tokens` list.

Differences from the original, none of which changes an example it kept:
- Library code takes `version_2_with_negative` as an argument (the original read FLAGS).
- A malformed file is a one-line `UserError` naming the file and the question (`data[i]...` path
  or id): bad JSON, a missing `data` / `paragraphs` / `qas` / `id`, an answer offset outside its
  context, duplicate ids, a SQuAD 2.0 file read without `version_2_with_negative`, no questions.
- Training on a question with several answers (SQuAD's dev files, which stand in for train here)
  uses the first one; the original refused such a file.
"""

from __future__ import annotations

import dataclasses
import json

from absl import logging

from bert_finetune import fileio, tokenization
from bert_finetune.errors import UserError


@dataclasses.dataclass
class SquadExample:
    """A single training/test example for simple sequence classification.

    For examples without an answer, the start and end position are -1.
    """

    qas_id: str
    question_text: str
    doc_tokens: list[str]
    orig_answer_text: str | None = None
    start_position: int | None = None
    end_position: int | None = None
    is_impossible: bool = False

    def __str__(self) -> str:
        s = (f"qas_id: {tokenization.printable_text(self.qas_id)}, question_text: "
             f"{tokenization.printable_text(self.question_text)}, doc_tokens: "
             f"[{' '.join(self.doc_tokens)}]")
        if self.start_position is not None:
            s += f", start_position: {self.start_position}, end_position: {self.end_position}"
        if self.is_impossible:
            s += f", is_impossible: {self.is_impossible}"
        return s


def is_whitespace(c: str) -> bool:
    """The original's context splitter: ASCII whitespace and U+202F (narrow no-break space)."""
    return c in (" ", "\t", "\r", "\n") or ord(c) == 0x202F


def split_context(paragraph_text: str) -> tuple[list[str], list[int]]:
    """(doc_tokens, char_to_word_offset): whitespace-separated words and each char's word index."""
    doc_tokens: list[str] = []
    char_to_word_offset: list[int] = []
    prev_is_whitespace = True
    for c in paragraph_text:
        if is_whitespace(c):
            prev_is_whitespace = True
        else:
            if prev_is_whitespace:
                doc_tokens.append(c)
            else:
                doc_tokens[-1] += c
            prev_is_whitespace = False
        char_to_word_offset.append(len(doc_tokens) - 1)
    return doc_tokens, char_to_word_offset


def load_squad_json(input_file: str) -> list:
    """The `data` list of a SQuAD JSON file; bad JSON or a missing `data` list is a UserError."""
    try:
        text = fileio.read_text(input_file)
    except FileNotFoundError:
        raise UserError(f"{input_file}: no such file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"{input_file}: cannot read it: {e}") from None
    if not text.strip():
        raise UserError(f"{input_file}: the file is empty: not a SQuAD file")
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise UserError(f"{input_file}: not valid JSON: line {e.lineno} column {e.colno}: "
                        f"{e.msg}") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("data"), list):
        raise UserError(f"{input_file}: no 'data' list at the top level: not a SQuAD file")
    return obj["data"]


def _field(obj, key: str, kind: type, where: str, input_file: str):
    if not isinstance(obj, dict) or key not in obj:
        raise UserError(f"{input_file}: {where} has no '{key}'")
    value = obj[key]
    if not isinstance(value, kind):
        raise UserError(f"{input_file}: {where}.{key} is a {type(value).__name__}, "
                        f"not a {kind.__name__}")
    return value


def iter_questions(data: list, input_file: str):
    """Yields (context, qa, where) for every question, checking the file's structure."""
    seen: set[str] = set()
    for i, entry in enumerate(data):
        paragraphs = _field(entry, "paragraphs", list, f"data[{i}]", input_file)
        for j, paragraph in enumerate(paragraphs):
            where_p = f"data[{i}].paragraphs[{j}]"
            context = _field(paragraph, "context", str, where_p, input_file)
            qas = _field(paragraph, "qas", list, where_p, input_file)
            for k, qa in enumerate(qas):
                where = f"{where_p}.qas[{k}]"
                qas_id = qa.get("id") if isinstance(qa, dict) else None
                if qas_id is None or qas_id == "":
                    raise UserError(f"{input_file}: {where} has no 'id': every question needs "
                                    "one (predictions.json is keyed by it)")
                qas_id = str(qas_id)
                if qas_id in seen:
                    raise UserError(f"{input_file}: question id {qas_id} appears twice")
                seen.add(qas_id)
                _field(qa, "question", str, f"question {qas_id}", input_file)
                answers = qa.get("answers", [])
                if not isinstance(answers, list):
                    raise UserError(f"{input_file}: question {qas_id}: 'answers' is not a list")
                for answer in answers:
                    _check_answer(answer, context, qas_id, input_file)
                yield context, qa, qas_id


def _check_answer(answer, context: str, qas_id: str, input_file: str) -> None:
    where = f"question {qas_id}"
    text = _field(answer, "text", str, f"{where}: an answer", input_file)
    start = _field(answer, "answer_start", int, f"{where}: an answer", input_file)
    if isinstance(start, bool) or start < 0 or start + len(text) > len(context):
        raise UserError(f"{input_file}: {where}: answer_start={start} with the {len(text)}-char "
                        f"answer {text[:40]!r} lies outside its {len(context)}-char context")


def read_squad_examples(input_file: str, is_training: bool,
                        version_2_with_negative: bool = False) -> list[SquadExample]:
    """Read a SQuAD json file into a list of SquadExample."""
    data = load_squad_json(input_file)
    examples = []
    skipped = 0
    multi_answer = 0
    split: tuple[str, tuple[list[str], list[int]]] | None = None
    # The whole file's structure is checked before any question is used.
    for context, qa, qas_id in list(iter_questions(data, input_file)):
        impossible = bool(qa.get("is_impossible", False))
        if impossible and not version_2_with_negative:
            raise UserError(
                f"{input_file}: question {qas_id} has is_impossible=true: this is a SQuAD 2.0 "
                "file; pass --version_2_with_negative=true to train/predict with unanswerable "
                "questions")
        if split is None or split[0] != context:  # one split per paragraph, shared
            split = (context, split_context(context))
        doc_tokens, char_to_word_offset = split[1]
        start_position = end_position = None
        orig_answer_text = None
        is_impossible = False
        if is_training:
            is_impossible = impossible if version_2_with_negative else False
            answers = qa.get("answers", [])
            if not is_impossible and not answers:
                raise UserError(f"{input_file}: question {qas_id} has no answer to train on"
                                + ("" if version_2_with_negative else
                                   " (unanswerable questions need --version_2_with_negative)"))
            if not is_impossible:
                multi_answer += len(answers) > 1
                answer = answers[0]
                orig_answer_text = answer["text"]
                answer_offset = answer["answer_start"]
                answer_length = len(orig_answer_text)
                if answer_length == 0:
                    raise UserError(f"{input_file}: question {qas_id}: empty answer text")
                start_position = char_to_word_offset[answer_offset]
                end_position = char_to_word_offset[answer_offset + answer_length - 1]
                # Only add answers where the text can be exactly recovered from the document.
                # If this CAN'T happen it's likely due to weird Unicode stuff so we will just
                # skip the example. So not every training example is kept.
                actual_text = " ".join(doc_tokens[start_position:(end_position + 1)])
                cleaned_answer_text = " ".join(
                    tokenization.whitespace_tokenize(orig_answer_text))
                if actual_text.find(cleaned_answer_text) == -1:
                    logging.warning("Could not find answer: '%s' vs. '%s'", actual_text,
                                    cleaned_answer_text)
                    skipped += 1
                    continue
            else:
                start_position = -1
                end_position = -1
                orig_answer_text = ""
        examples.append(SquadExample(
            qas_id=qas_id, question_text=qa["question"], doc_tokens=doc_tokens,
            orig_answer_text=orig_answer_text, start_position=start_position,
            end_position=end_position, is_impossible=is_impossible))
    if not examples and not skipped:
        raise UserError(f"{input_file}: no questions in the file")
    if not examples:
        raise UserError(f"{input_file}: none of its {skipped} answers can be found in the "
                        "whitespace-split context")
    if skipped:
        logging.warning("%s: skipped %d of %d questions whose answer text cannot be recovered "
                        "from the context (as run_squad.py did)", input_file, skipped,
                        skipped + len(examples))
    if multi_answer:
        logging.info("%s: %d questions have several answers; training uses the first",
                     input_file, multi_answer)
    return examples


def read_gold(input_file: str) -> dict[str, list[str]] | None:
    """{question id: gold answer texts} of a SQuAD file; None if it gives no answers at all.

    An empty list is an unanswerable (v2.0) question.
    """
    gold = {}
    any_gold = False
    for _, qa, qas_id in iter_questions(load_squad_json(input_file), input_file):
        gold[qas_id] = [a["text"] for a in qa.get("answers", [])]
        any_gold = any_gold or bool(gold[qas_id]) or bool(qa.get("is_impossible", False))
    return gold if any_gold else None
