"""bert-predict: a fine-tuned model, loaded once, answering many inputs (JSON Lines out).

    bert-predict --model=/tmp/mrpc_output --text "He said so." --text_b "So he said."
    cut -f4,5 test.tsv | bert-predict --model=/tmp/mrpc_export       # stdin: a<TAB>b per line
    bert-predict --model=/tmp/mrpc_onnx --backend=onnxruntime --input_file=test.tsv \
      --text_a_column=3 --text_b_column=4 --output_file=predictions.jsonl

    # question answering (a bert-squad output_dir or its bert-export --squad SavedModel)
    bert-predict --model=/tmp/squad_export --question "Where?" --context "In Paris."
    bert-predict --model=/tmp/squad_export --input_file=dev-v1.1.json --input_format=squad
    echo '{"question": "Where?", "context": "In Paris."}' | bert-predict --model=/tmp/squad_export

--model: a bert-classify or bert-squad output directory, or a bert-export output (SavedModel,
ONNX, TFLite).
"""

from __future__ import annotations

import sys

from absl import flags

from bert_finetune import fileio, predict
from bert_finetune.cli.common import fail, run_main

FLAGS = flags.FLAGS
PROGRAM = "bert-predict"

flags.DEFINE_string("model", None, "A bert-classify or bert-squad output_dir, or a bert-export "
                    "output_dir.")
flags.DEFINE_enum("backend", "auto", list(predict.BACKENDS),
                  "auto: what --model holds (TensorFlow for a run directory or SavedModel). "
                  "onnxruntime needs `pip install 'bert_finetune[onnx]'`.")
flags.DEFINE_string("text", None, "One input text (text_a).")
flags.DEFINE_string("text_b", None, "The second text of a sentence-pair input.")
flags.DEFINE_string("input_file", None,
                    "A TSV/CSV/JSONL file of inputs (columns as the generic task's). Without "
                    "--text or --input_file, stdin is read: text_a (or text_a<TAB>text_b) per line.")
flags.DEFINE_enum("input_format", "tsv", ["tsv", "csv", "jsonl", "squad"],
                  "Format of --input_file. A bert-squad model reads jsonl ({\"question\": ..., "
                  "\"context\": ...[, \"id\": ...]} per line) or squad (a SQuAD JSON file).")
flags.DEFINE_string("text_a_column", "0", "Column (header name or 0-based index; JSONL key) "
                    "of text_a in --input_file.")
flags.DEFINE_string("text_b_column", None, "Column of text_b in --input_file (pair models).")
flags.DEFINE_bool("has_header", False, "The first row of --input_file (TSV/CSV) names columns.")
flags.DEFINE_string("output_file", None, "Write the JSON Lines here (atomically) instead of "
                    "streaming them to stdout.")
flags.DEFINE_integer("batch_size", 32, "Inputs per model call.")
flags.DEFINE_string("question", None, "A bert-squad model: one question (with --context).")
flags.DEFINE_string("context", None, "A bert-squad model: the passage --question asks about.")


def _questions(info: predict.ModelInfo):
    if FLAGS.text is not None or FLAGS.text_b is not None:
        fail(PROGRAM, f"--model={info.path} is a bert-squad model: give --question and "
             "--context (or --input_file, or JSON lines on stdin), not --text")
    if (FLAGS.question is None) != (FLAGS.context is None):
        fail(PROGRAM, "--question and --context go together")
    if FLAGS.question is not None:
        if FLAGS.input_file:
            fail(PROGRAM, "give --question or --input_file, not both")
        return [{"question": FLAGS.question, "context": FLAGS.context}]
    if FLAGS.input_file:
        return predict.question_file(FLAGS.input_file, FLAGS.input_format)
    return predict.question_lines(sys.stdin)


def _examples(info: predict.ModelInfo):
    if FLAGS.question is not None or FLAGS.context is not None:
        fail(PROGRAM, f"--question/--context: --model={info.path} is a classifier; give --text")
    if FLAGS.input_format == "squad":
        fail(PROGRAM, f"--input_format=squad: --model={info.path} is a classifier")
    if FLAGS.text is not None:
        if FLAGS.input_file:
            fail(PROGRAM, "give --text or --input_file, not both")
        if info.sentence_pair and FLAGS.text_b is None:
            fail(PROGRAM, f"--model={info.path} was fine-tuned on sentence pairs: give --text_b "
                 "too")
        if not info.sentence_pair and FLAGS.text_b is not None:
            fail(PROGRAM, f"--text_b: --model={info.path} was fine-tuned on single sentences")
        return [(FLAGS.text, FLAGS.text_b)]
    if FLAGS.text_b is not None:
        fail(PROGRAM, "--text_b needs --text")
    if FLAGS.input_file:
        return predict.file_examples(FLAGS.input_file, FLAGS.input_format, FLAGS.text_a_column,
                                     FLAGS.text_b_column, FLAGS.has_header, info.sentence_pair)
    return predict.line_examples(sys.stdin, info.sentence_pair)


def main(argv: list[str]) -> None:
    if not FLAGS.model:
        fail(PROGRAM, "--model is required")
    if FLAGS.batch_size <= 0:
        fail(PROGRAM, f"--batch_size={FLAGS.batch_size} must be positive")
    predictor = predict.load_model(FLAGS.model, FLAGS.backend)
    if predictor.info.task == "squad":
        records = predict.answer_records(predictor, _questions(predictor.info), FLAGS.batch_size)
    else:
        records = predict.predict_records(predictor, _examples(predictor.info),
                                          FLAGS.batch_size)
    if FLAGS.output_file:
        rows = [fileio.json_line(r) for r in records]  # all, then write
        fileio.atomic_write(FLAGS.output_file, "".join(rows))
        return
    for i, record in enumerate(records, start=1):
        sys.stdout.write(fileio.json_line(record))
        if i % FLAGS.batch_size == 0:  # streaming: each batch as soon as it is answered
            sys.stdout.flush()
    sys.stdout.flush()


def run() -> None:
    run_main(PROGRAM, main)


if __name__ == "__main__":
    run()
