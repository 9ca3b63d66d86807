"""Predicting with a fine-tuned model: load once, answer many inputs in batches.

The library behind `bert-predict`. `load_model(path, backend)` opens, once, any of:
  - a bert-classify output directory (run_flags.json + model.ckpt-N): TensorFlow, features packed
    in Python exactly as bert-classify packs them;
  - a `bert-export --classifier` SavedModel (a version directory, or the base directory holding
    versions, newest taken): TensorFlow, raw strings through `serving_default`;
  - a `--format=onnx` export (model.onnx): ONNX Runtime, features packed in Python;
  - a `--format=tflite` export (model.tflite): the TFLite interpreter, features packed in Python.
  - a bert-squad output directory or its `bert-export --squad` SavedModel: TensorFlow, the
    export's graph (in-graph tokenization and answer selection) either way.
Each logs exactly one "Loaded ..." line. `Predictor.predict(text_a, text_b)` returns class
probabilities [B, C] (or regression values [B]); `predict_records` streams result dicts.
`SquadPredictor.answer(questions, contexts)` returns the answers; `answer_records` streams them.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
import warnings
from collections.abc import Iterable, Iterator, Sequence

import numpy as np
from absl import logging

from bert_finetune import classify, fileio, tokenization
from bert_finetune.data import features as feature_lib
from bert_finetune.data.examples import REGRESSION_PLACEHOLDER, InputExample
from bert_finetune.errors import UserError

BACKENDS = ("auto", "tensorflow", "onnxruntime", "tflite")
ONNX_INSTALL_HINT = "pip install 'bert_finetune[onnx]'"
EXPORT_INFO = "export_info.json"  # as export/serving.py writes it
ONNX_FILE = "model.onnx"
TFLITE_FILE = "model.tflite"
# convert_single_example logs its first 5 examples (by index); serving logs none of them.
_QUIET_INDEX = 5


@dataclasses.dataclass
class ModelInfo:
    """What a caller needs to know about a loaded model."""

    path: str
    backend: str
    label_list: list[str]
    is_regression: bool
    sentence_pair: bool
    max_seq_length: int | None = None
    task: str = "classify"  # or "squad" (question answering)


class Predictor:
    """A loaded model. Subclasses implement `_predict` on checked inputs."""

    info: ModelInfo

    def predict(self, text_a: Sequence[str], text_b: Sequence[str] | None = None) -> np.ndarray:
        """Probabilities [B, C] float32 (regression: predictions [B]) for B inputs."""
        if self.info.task == "squad":
            raise UserError(f"{self.info.path} is a bert-squad model: give a question and a "
                            "context, not texts to classify")
        text_a = _check_texts(text_a, "text_a")
        if text_b is not None:
            text_b = _check_texts(text_b, "text_b")
            if len(text_b) != len(text_a):
                raise UserError(f"{len(text_a)} text_a but {len(text_b)} text_b inputs")
        if self.info.sentence_pair and text_b is None:
            raise UserError("the model was fine-tuned on sentence pairs: give text_b too (an "
                            "empty text_b makes an input a single sentence)")
        if not self.info.sentence_pair and text_b is not None:
            raise UserError("the model was fine-tuned on single sentences: give no text_b")
        if not text_a:
            width = 1 if self.info.is_regression else len(self.info.label_list)
            return np.zeros([0] if self.info.is_regression else [0, width], np.float32)
        return self._predict(text_a, text_b)

    def _predict(self, text_a: list[str], text_b: list[str] | None) -> np.ndarray:
        raise NotImplementedError


def _check_texts(texts: Sequence[str], name: str) -> list[str]:
    if isinstance(texts, (str, bytes)):
        raise UserError(f"{name} must be a list of strings, not one string")
    out = list(texts)
    for i, t in enumerate(out):
        if not isinstance(t, str):
            raise UserError(f"{name} input {i} is not a string: {json.dumps(t, default=repr)}")
    return out


class _Packer:
    """Features as bert-classify packs them: FullTokenizer, `_truncate_seq_pair`, zero padding."""

    def __init__(self, vocab_file: str, do_lower_case: bool, max_seq_length: int,
                 label_list: list[str], is_regression: bool):
        self.tokenizer = tokenization.FullTokenizer(vocab_file, do_lower_case)
        self.max_seq_length = max_seq_length
        self.label_list = label_list
        self.is_regression = is_regression
        self.placeholder = REGRESSION_PLACEHOLDER if is_regression else label_list[0]

    def __call__(self, text_a: list[str], text_b: list[str] | None) -> dict[str, np.ndarray]:
        rows = [feature_lib.convert_single_example(
            _QUIET_INDEX, InputExample(f"predict-{i}", a, None if text_b is None else text_b[i],
                                       self.placeholder),
            self.label_list, self.max_seq_length, self.tokenizer, self.is_regression)
            for i, a in enumerate(text_a)]
        return {name: np.array([getattr(r, name) for r in rows], np.int32)
                for name in ("input_ids", "input_mask", "segment_ids")}


def _probabilities(out: dict, is_regression: bool) -> np.ndarray:
    key = "predictions" if is_regression else "probabilities"
    return np.asarray(out[key], np.float32)


# -- backends ------------------------------------------------------------------------------------
class RunDirPredictor(Predictor):
    """A bert-classify output directory, on TensorFlow."""

    def __init__(self, run_dir: str):
        import tensorflow as tf

        from bert_finetune.export import run_dir as run_dir_lib
        from bert_finetune.export import serving

        record = run_dir_lib.load_run(run_dir)
        self.info = ModelInfo(run_dir, "tensorflow", record.label_list, record.is_regression,
                              record.sentence_pair, record.max_seq_length)
        self._packer = _Packer(record.vocab_file, record.do_lower_case, record.max_seq_length,
                               record.label_list, record.is_regression)
        model = record.build_model()
        self._fn = tf.function(lambda ids, mask, seg: serving.classifier_outputs(
            model, ids, mask, seg), input_signature=serving.ids_signature())

    def _predict(self, text_a, text_b):
        f = self._packer(text_a, text_b)
        out = self._fn(f["input_ids"], f["input_mask"], f["segment_ids"])
        return _probabilities({k: v.numpy() for k, v in out.items()}, self.info.is_regression)


class SavedModelPredictor(Predictor):
    """A bert-export --classifier SavedModel: raw strings through `serving_default`."""

    def __init__(self, path: str):
        import tensorflow as tf

        from bert_finetune.export.text_preprocessing import import_tensorflow_text

        import_tensorflow_text()  # registers the tokenizer's ops before the graph loads
        self._tf = tf
        loaded = tf.saved_model.load(path)
        self._loaded = loaded  # keeps the variables alive
        self._fn = loaded.signatures["serving_default"]
        inputs = self._fn.structured_input_signature[1]
        info = _read_info(os.path.join(path, "assets"))
        self.info = ModelInfo(path, "tensorflow", info["label_list"], info["is_regression"],
                              "text_b" in inputs, info.get("max_seq_length"))

    def _predict(self, text_a, text_b):
        tf = self._tf
        feed = {"text_a": tf.constant(text_a, tf.string)}
        if text_b is not None:
            feed["text_b"] = tf.constant(text_b, tf.string)
        out = self._fn(**feed)
        return _probabilities({k: v.numpy() for k, v in out.items()}, self.info.is_regression)


class _IdsPredictor(Predictor):
    """An exported model on ids (ONNX, TFLite) with its tokenization files beside it."""

    def __init__(self, directory: str, backend: str):
        info = _read_info(directory)
        self.info = ModelInfo(directory, backend, info["label_list"], info["is_regression"],
                              info["sentence_pair"], info["max_seq_length"])
        self._packer = _Packer(os.path.join(directory, "vocab.txt"), info["do_lower_case"],
                               info["max_seq_length"], info["label_list"], info["is_regression"])


class OnnxPredictor(_IdsPredictor):
    def __init__(self, directory: str):
        super().__init__(directory, "onnxruntime")
        try:
            import onnxruntime
        except ImportError:
            raise UserError("--backend=onnxruntime needs onnxruntime, which is not installed: "
                            f"{ONNX_INSTALL_HINT}") from None
        self._session = onnxruntime.InferenceSession(os.path.join(directory, ONNX_FILE),
                                                     providers=["CPUExecutionProvider"])
        self._outputs = [o.name for o in self._session.get_outputs()]

    def _predict(self, text_a, text_b):
        values = self._session.run(self._outputs, self._packer(text_a, text_b))
        return _probabilities(dict(zip(self._outputs, values, strict=True)),
                              self.info.is_regression)


def tflite_interpreter(model_path: str):
    """The LiteRT interpreter (ai_edge_litert) if installed, else TensorFlow's tf.lite one."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        import tensorflow as tf

        Interpreter = tf.lite.Interpreter  # noqa: N806
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tf.lite.Interpreter's deprecation notice
        return Interpreter(model_path=model_path)


class TFLitePredictor(_IdsPredictor):
    def __init__(self, directory: str):
        super().__init__(directory, "tflite")
        self._interpreter = tflite_interpreter(os.path.join(directory, TFLITE_FILE))
        self._runner = self._interpreter.get_signature_runner("serving_default")

    def _predict(self, text_a, text_b):
        return _probabilities(self._runner(**self._packer(text_a, text_b)),
                              self.info.is_regression)


class SquadPredictor(Predictor):
    """A bert-squad model: its `bert-export --squad` SavedModel, or its output directory (the
    same serving graph, built in memory). `answer` runs the graph's serving_default."""

    def __init__(self, path: str, saved_model: bool):
        import tensorflow as tf

        from bert_finetune.export.text_preprocessing import import_tensorflow_text

        import_tensorflow_text()  # registers the tokenizer's ops before the graph loads
        self._tf = tf
        if saved_model:
            self._loaded = tf.saved_model.load(path)  # keeps the variables alive
            self._fn = self._loaded.signatures["serving_default"]
            info = _read_info(os.path.join(path, "assets"))
            seq = info.get("max_seq_length")
        else:
            from bert_finetune.export import run_dir as run_dir_lib
            from bert_finetune.export import squad_serving

            record = run_dir_lib.load_squad_run(path)
            self._loaded = squad_serving.SquadServer(record, record.build_model())
            self._fn = self._loaded.signatures()["serving_default"]
            seq = record.max_seq_length
        self.info = ModelInfo(path, "tensorflow", [], False, True, seq, task="squad")

    def answer(self, questions: Sequence[str], contexts: Sequence[str]) -> dict[str, np.ndarray]:
        """serving_default's outputs ([B] arrays; strings decoded) for B (question, context)."""
        questions = _check_texts(questions, "question")
        contexts = _check_texts(contexts, "context")
        if len(questions) != len(contexts):
            raise UserError(f"{len(questions)} questions but {len(contexts)} contexts")
        tf = self._tf
        out = self._fn(question=tf.constant(questions, tf.string),
                       context=tf.constant(contexts, tf.string))
        out = {k: v.numpy() for k, v in out.items()}
        out["answer"] = np.array([a.decode("utf-8") for a in out["answer"]], object)
        return out


def _read_info(directory: str) -> dict:
    path = os.path.join(directory, EXPORT_INFO)
    try:
        info = json.loads(fileio.read_text(path))
    except FileNotFoundError:
        raise UserError(f"{path} is missing: is {directory} a bert-export output?") from None
    except (OSError, ValueError) as e:
        raise UserError(f"{path}: cannot read it ({e})") from None
    return info


def _saved_model_dir(path: str) -> str | None:
    """`path` itself, or its newest numeric version directory, if that holds saved_model.pb."""
    if fileio.is_file(os.path.join(path, "saved_model.pb")):
        return path
    if not fileio.is_dir(path):
        return None
    versions = sorted((int(n) for n in os.listdir(path) if n.isdigit()), reverse=True)
    for v in versions:
        candidate = os.path.join(path, str(v))
        if fileio.is_file(os.path.join(candidate, "saved_model.pb")):
            return candidate
    return None


def load_model(path: str, backend: str = "auto") -> Predictor:
    """Opens the model at `path` with `backend` (see the module doc); logs one line."""
    if backend not in BACKENDS:
        raise UserError(f"--backend={backend}: use one of {', '.join(BACKENDS)}")
    if not fileio.is_dir(path):
        raise UserError(f"--model={path}: directory not found")
    start = time.time()
    saved = _saved_model_dir(path)
    has_onnx = fileio.is_file(os.path.join(path, ONNX_FILE))
    has_tflite = fileio.is_file(os.path.join(path, TFLITE_FILE))
    is_run = fileio.is_file(os.path.join(path, classify.RUN_FLAGS_FILE))
    squad = _is_squad(path, saved, is_run)
    kinds = {"onnxruntime": has_onnx, "tflite": has_tflite,
             "tensorflow": bool(saved) or is_run}
    if backend == "auto":
        backend = next((b for b in ("tensorflow", "onnxruntime", "tflite") if kinds[b]), "")
        if not backend:
            raise UserError(f"--model={path}: neither a bert-classify output directory nor a "
                            "bert-export output (saved_model.pb, model.onnx or model.tflite)")
    elif not kinds[backend]:
        wanted = {"onnxruntime": f"{ONNX_FILE} (bert-export --format=onnx)",
                  "tflite": f"{TFLITE_FILE} (bert-export --format=tflite)",
                  "tensorflow": "a SavedModel or a bert-classify output directory"}[backend]
        raise UserError(f"--model={path} has no {wanted} for --backend={backend}")
    if squad and backend != "tensorflow":
        raise UserError(f"--model={path} is a bert-squad model: it runs on --backend=tensorflow "
                        "only")
    if squad:
        predictor: Predictor = SquadPredictor(saved or path, saved_model=bool(saved))
    elif backend == "onnxruntime":
        predictor = OnnxPredictor(path)
    elif backend == "tflite":
        predictor = TFLitePredictor(path)
    elif saved:
        predictor = SavedModelPredictor(saved)
    else:
        predictor = RunDirPredictor(path)
    info = predictor.info
    if info.task == "squad":
        what = "question answering"
    else:
        pairs = "sentence pairs" if info.sentence_pair else "single sentences"
        what = f"{pairs}, {len(info.label_list)} labels"
    logging.info("Loaded model %s (%s, %s) in %.1f s", info.path, info.backend, what,
                 time.time() - start)
    return predictor


def _is_squad(path: str, saved: str | None, is_run: bool) -> bool:
    """Whether `path` holds a bert-squad model (export_info.json / the checkpoint's head)."""
    if saved:
        info_file = os.path.join(saved, "assets", EXPORT_INFO)
        return fileio.is_file(info_file) and _read_info(os.path.dirname(info_file)).get(
            "task") == "squad"
    if is_run:
        from bert_finetune.export import run_dir as run_dir_lib

        return run_dir_lib.run_kind(path) == "squad"
    return False


# -- streaming -----------------------------------------------------------------------------------
def _batches(examples: Iterable[tuple[str, str | None]], batch_size: int
             ) -> Iterator[list[tuple[str, str | None]]]:
    batch: list[tuple[str, str | None]] = []
    for example in examples:
        batch.append(example)
        if len(batch) == batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


def predict_records(predictor: Predictor, examples: Iterable[tuple[str, str | None]],
                    batch_size: int = 32) -> Iterator[dict]:
    """Yields one result dict per (text_a, text_b) example, predicting `batch_size` at a time.

    Classification: {"text", ["text_b",] "label", "probabilities": {label: p}};
    regression: {"text", ["text_b",] "prediction"}. Values are the float32 outputs as floats.
    """
    info = predictor.info
    for batch in _batches(examples, batch_size):
        text_a = [a for a, _ in batch]
        text_b = [b for _, b in batch] if info.sentence_pair else None
        out = predictor.predict(text_a, text_b)
        for (a, b), row in zip(batch, out, strict=True):
            record: dict = {"text": a}
            if info.sentence_pair:
                record["text_b"] = b
            if info.is_regression:
                record["prediction"] = float(row)
            else:
                record["label"] = info.label_list[int(np.argmax(row))]
                record["probabilities"] = {lab: float(p) for lab, p in
                                           zip(info.label_list, row, strict=True)}
            yield record


# -- inputs --------------------------------------------------------------------------------------
def file_examples(path: str, input_format: str, text_a_column: str, text_b_column: str | None,
                  has_header: bool, sentence_pair: bool) -> list[tuple[str, str | None]]:
    """(text_a, text_b) of every row of a TSV / CSV / JSONL file (the generic task's columns)."""
    from bert_finetune.data.generic import GenericProcessor

    if sentence_pair and text_b_column in (None, ""):
        raise UserError(f"--input_file={path}: the model was fine-tuned on sentence pairs: give "
                        "--text_b_column too")
    if not sentence_pair and text_b_column not in (None, ""):
        raise UserError(f"--text_b_column={text_b_column}: the model was fine-tuned on single "
                        "sentences")
    directory, name = os.path.split(path)
    # The test split reads no label column; `label_column` only has to be given.
    processor = GenericProcessor(input_format, text_a_column, text_b_column or None,
                                 label_column=text_a_column, has_header=has_header,
                                 labels=["-"], test_file=name)
    return [(e.text_a, e.text_b) for e in processor.get_test_examples(directory or ".")]


def line_examples(lines: Iterable[str], sentence_pair: bool, source: str = "stdin"
                  ) -> Iterator[tuple[str, str | None]]:
    """(text_a, text_b) per non-blank line: `text_a`, or `text_a<TAB>text_b` for a pair model."""
    for number, line in enumerate(lines, start=1):
        line = line.rstrip("\r\n")
        if not line.strip():
            continue
        if not sentence_pair:
            yield line, None
            continue
        parts = line.split("\t")
        if len(parts) != 2:
            raise UserError(f"{source}, line {number}: the model was fine-tuned on sentence "
                            f"pairs: write text_a<TAB>text_b (found {len(parts)} tab-separated "
                            "fields)")
        yield parts[0], parts[1]


# -- question answering (bert-squad models) ------------------------------------------------------
def answer_records(predictor: SquadPredictor, examples: Iterable[dict],
                   batch_size: int = 32) -> Iterator[dict]:
    """Yields one result per {"question", "context"[, "id"]} example, `batch_size` at a time:
    {["id",] "question", "answer", "score", "probability", "answer_start", "answer_end",
    "num_windows"[, "null_score_diff"]} (see export/squad_serving.py for their meaning)."""
    for batch in _batches(examples, batch_size):
        out = predictor.answer([e["question"] for e in batch], [e["context"] for e in batch])
        for i, example in enumerate(batch):
            record: dict = {"id": example["id"]} if "id" in example else {}
            record["question"] = example["question"]
            record["answer"] = out["answer"][i]
            for key in ("score", "probability", "null_score_diff"):
                if key in out:
                    record[key] = float(out[key][i])
            record["answer_start"] = int(out["answer_start"][i])
            record["answer_end"] = int(out["answer_end"][i])
            record["num_windows"] = int(out["num_windows"][i])
            yield record


def question_lines(lines: Iterable[str], source: str = "stdin") -> Iterator[dict]:
    """{"question", "context"[, "id"]} per non-blank JSON line (other keys are ignored)."""
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{source}, line {number}"
        try:
            obj = json.loads(line)
        except ValueError as e:
            raise UserError(f"{where}: not JSON ({e}); a bert-squad model reads one "
                            '{"question": ..., "context": ...} object per line') from None
        if not isinstance(obj, dict):
            raise UserError(f"{where}: not a JSON object; write "
                            '{"question": ..., "context": ...}')
        yield _question(obj, where)


def _question(obj: dict, where: str) -> dict:
    example = {}
    for key in ("question", "context"):
        if key not in obj:
            raise UserError(f'{where}: no "{key}"; a bert-squad model needs "question" and '
                            '"context"')
        if not isinstance(obj[key], str):
            raise UserError(f'{where}: "{key}" is not a string: '
                            f"{json.dumps(obj[key], default=repr)[:80]}")
        example[key] = obj[key]
    if "id" in obj:
        example["id"] = obj["id"]
    return example


def question_file(path: str, input_format: str) -> list[dict]:
    """The questions of a JSON Lines file (`jsonl`) or a SQuAD JSON file (`squad`, with ids)."""
    if input_format == "squad":
        from bert_finetune.data import squad as squad_data

        return [{"id": qas_id, "question": qa["question"], "context": context}
                for context, qa, qas_id in squad_data.iter_questions(
                    squad_data.load_squad_json(path), path)]
    if input_format != "jsonl":
        raise UserError(f"--input_format={input_format}: a bert-squad model reads jsonl "
                        '({"question": ..., "context": ...} per line) or squad (a SQuAD JSON file)')
    try:
        text = fileio.read_text(path)
    except FileNotFoundError:
        raise UserError(f"--input_file={path}: no such file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"--input_file={path}: cannot read it ({e})") from None
    return list(question_lines(text.splitlines(), path))
