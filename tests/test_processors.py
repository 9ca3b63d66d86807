"""Data processors: GLUE/XNLI on the real files in ../shared, error reporting, the generic reader."""

from __future__ import annotations

import csv
import json
import logging
import shutil
from pathlib import Path

import pytest

from bert_finetune.data import (
    PROCESSORS,
    DataProcessor,
    GenericProcessor,
    InputExample,
    PaddingInputExample,
    get_processor,
)
from bert_finetune.data.glue import (
    ColaProcessor,
    MnliMismatchedProcessor,
    MnliProcessor,
    MrpcProcessor,
    QqpProcessor,
    StsbProcessor,
    XnliProcessor,
)
from bert_finetune.errors import UserError

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
GLUE = SHARED / "data" / "glue"


def needs_shared():
    if not SHARED.is_dir():
        pytest.skip("../shared is absent")


def error_of(fn, *args, **kwargs) -> str:
    with pytest.raises(UserError) as info:
        fn(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


def write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def tsv(rows: list[list[str]]) -> str:
    return "".join("\t".join(r) + "\n" for r in rows)


# -- GLUE on the real files ---------------------------------------------------------------------

# task, folder, split, rows (../shared/data/README.md), first example (guid, text_a, text_b, label)
REAL = [
    ("mrpc", "MRPC", "train", 3668, ("train-1", "Amrozi accused his brother , whom he called \" the "
     "witness \" , of deliberately distorting his evidence .", "Referring to him as only \" the "
     "witness \" , Amrozi accused his brother of deliberately distorting his evidence .", "1")),
    ("mrpc", "MRPC", "dev", 408, ("dev-1", "He said the foodservice pie business doesn 't fit the "
     "company 's long-term growth strategy .", "\" The foodservice pie business does not fit our "
     "long-term growth strategy .", "1")),
    ("mrpc", "MRPC", "test", 1725, ("test-1", "PCCW 's chief operating officer , Mike Butcher , and "
     "Alex Arena , the chief financial officer , will report directly to Mr So .", "Current Chief "
     "Operating Officer Mike Butcher and Group Chief Financial Officer Alex Arena will report to So "
     ".", "0")),
    ("cola", "CoLA", "train", 8551, ("train-0", "Our friends won't buy this analysis, let alone the "
     "next one we propose.", None, "1")),
    ("cola", "CoLA", "dev", 1043, ("dev-0", "The sailors rode the breeze clear of the rocks.", None,
     "1")),
    ("cola", "CoLA", "test", 1063, ("test-1", "Bill whistled past the house.", None, "0")),
    ("sst-2", "SST-2", "train", 5000, ("train-1", "hide new secretions from the parental units ",
     None, "0")),
    ("sst-2", "SST-2", "dev", 872, ("dev-1", "it 's a charming and often affecting journey . ", None,
     "1")),
    ("sst-2", "SST-2", "test", 1821, ("test-1", "uneasy mishmash of styles and genres .", None, "0")),
    ("qnli", "QNLI", "train", 32, ("train-64724", "In what year did Robert Louis Stevenson die?",
     "Mission work in Samoa had begun in late 1830 by John Williams, of the London Missionary "
     "Society arriving in Sapapali'i from The Cook Islands and Tahiti.", "not_entailment")),
    ("qnli", "QNLI", "dev", 5463, ("dev-0", "What came into force after the new constitution was "
     "herald?", "As of that day, the new constitution heralding the Second Republic came into "
     "force.", "entailment")),
    ("qnli", "QNLI", "test", 5463, ("test-0", "What organization is devoted to Jihad against "
     "Israel?", None, "entailment")),
    ("rte", "RTE", "train", 2490, ("train-0", "No Weapons of Mass Destruction Found in Iraq Yet.",
     "Weapons of Mass Destruction Found in Iraq.", "not_entailment")),
    ("rte", "RTE", "dev", 277, ("dev-0", None, "Christopher Reeve had an accident.",
     "not_entailment")),
    ("rte", "RTE", "test", 3000, ("test-0", None, "Shukla is related to Mangla.", "entailment")),
    ("wnli", "WNLI", "train", 635, ("train-0", "I stuck a pin through a carrot. When I pulled the pin"
     " out, it had a hole.", "The carrot had a hole.", "1")),
    ("wnli", "WNLI", "dev", 71, ("dev-0", "The drain is clogged with hair. It has to be cleaned.",
     "The hair has to be cleaned.", "0")),
    ("wnli", "WNLI", "test", 146, ("test-0", None, "Horses ran away when Maude and Dora came in "
     "sight.", "0")),
    ("sts-b", "STS-B", "train", 5749, ("train-0", "A plane is taking off.",
     "An air plane is taking off.", "5.000")),
    ("sts-b", "STS-B", "dev", 1500, ("dev-0", "A man with a hard hat is dancing.",
     "A man wearing a hard hat is dancing.", "5.000")),
    ("sts-b", "STS-B", "test", 1379, ("test-0", "A girl is styling her hair.",
     "A girl is brushing her hair.", "0.0")),
    ("mnli", "MNLI", "train", 48, ("train-155219", "That's all right.", "That's fine.",
     "entailment")),
]


@pytest.mark.parametrize("task,folder,split,count,first", REAL,
                         ids=[f"{r[0]}-{r[2]}" for r in REAL])
def test_glue_real_files(task, folder, split, count, first):
    needs_shared()
    processor = get_processor(task)
    examples = getattr(processor, f"get_{split}_examples")(str(GLUE / folder))
    assert len(examples) == count
    guid, text_a, text_b, label = first
    ex = examples[0]
    assert ex.guid == guid and ex.label == label
    if text_a is not None:  # None: long text, not worth spelling out here
        assert ex.text_a == text_a
    if text_b is not None:
        assert ex.text_b == text_b
    assert len({e.guid for e in examples}) == count
    labels = {e.label for e in examples}
    if split == "test":
        assert labels == {processor.placeholder_label()}
    elif processor.is_regression:
        assert all(0.0 <= float(x) <= 5.0 for x in labels)
    else:
        assert labels == set(processor.get_labels())  # every class occurs in train and dev


def original_rows(path: Path) -> list[list[str]]:
    """The rows the original's `_read_tsv` gives (plus the BOM handling MRPC needs)."""
    with open(path, encoding="utf-8-sig", newline="") as f:
        return list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))


def test_mrpc_and_cola_match_the_original_loops():
    """Whole-file parity with run_classifier.py's MrpcProcessor / ColaProcessor loops."""
    needs_shared()
    for split in ("train", "dev", "test"):
        lines = original_rows(GLUE / "MRPC" / f"{split}.tsv")
        want = [InputExample(f"{split}-{i}", line[3], line[4], "0" if split == "test" else line[0])
                for i, line in enumerate(lines) if i > 0]
        assert getattr(MrpcProcessor(), f"get_{split}_examples")(str(GLUE / "MRPC")) == want
        lines = original_rows(GLUE / "CoLA" / f"{split}.tsv")
        want = [InputExample(f"{split}-{i}", line[1], None, "0") if split == "test"
                else InputExample(f"{split}-{i}", line[3], None, line[1])
                for i, line in enumerate(lines) if not (split == "test" and i == 0)]
        assert getattr(ColaProcessor(), f"get_{split}_examples")(str(GLUE / "CoLA")) == want


def test_cola_dev_last_line_without_newline():
    needs_shared()
    last = ColaProcessor().get_dev_examples(str(GLUE / "CoLA"))[-1]
    assert (last.guid, last.text_a, last.label) == ("dev-1042", "John talked to Bill about himself.",
                                                   "1")


def test_qqp_sample_and_read_tsv(tmp_path):
    needs_shared()
    rows = DataProcessor._read_tsv(str(GLUE / "QQP" / "train_sample.tsv"))
    assert rows[0] == ["id", "qid1", "qid2", "question1", "question2", "is_duplicate"]
    assert len(rows) == 33
    shutil.copy(GLUE / "QQP" / "train_sample.tsv", tmp_path / "train.tsv")
    processor = QqpProcessor()
    examples = processor.get_train_examples(str(tmp_path))
    assert len(examples) == 32 and processor.skipped_rows == {str(tmp_path / "train.tsv"): 0}
    assert examples[0] == InputExample(
        "train-328831", "Why do some people think that having a baby is a blessing?",
        "Why is having a baby a blessing?", "1")
    assert {e.label for e in examples} == {"0", "1"}


# -- MNLI / XNLI / QQP on files built in the documented layouts ----------------------------------

MNLI_DEV_HEADER = ("index promptID pairID genre sentence1_binary_parse sentence2_binary_parse "
                   "sentence1_parse sentence2_parse sentence1 sentence2 label1 label2 label3 "
                   "label4 label5 gold_label").split()


def mnli_dir(tmp_path: Path, n: int = 5) -> tuple[Path, list[list[str]]]:
    """dev_matched/test_matched/..._mismatched cut from the shared MNLI train rows (dev layout)."""
    needs_shared()
    train = original_rows(GLUE / "MNLI" / "train.tsv")[1:n + 1]
    dev = [r[:10] + [r[10]] * 5 + [r[11]] for r in train]  # 5 annotator labels, then gold
    test = [r[:10] for r in train]
    d = tmp_path / "MNLI"
    for kind in ("matched", "mismatched"):
        write(d / f"dev_{kind}.tsv", tsv([MNLI_DEV_HEADER] + dev))
        write(d / f"test_{kind}.tsv", tsv([MNLI_DEV_HEADER[:10]] + test))
    return d, train


def test_mnli_dev_and_test_layouts(tmp_path):
    d, train = mnli_dir(tmp_path)
    dev = MnliProcessor().get_dev_examples(str(d))
    assert [(e.guid, e.text_a, e.text_b, e.label) for e in dev] == [
        (f"dev_matched-{r[0]}", r[8], r[9], r[11]) for r in train]
    test = MnliProcessor().get_test_examples(str(d))
    assert [(e.guid, e.label) for e in test] == [(f"test-{r[0]}", "contradiction") for r in train]
    mm = MnliMismatchedProcessor()
    assert mm.get_dev_examples(str(d))[0].guid == f"dev_mismatched-{train[0][0]}"
    assert mm.get_test_examples(str(d))[0].guid == f"test_mismatched-{train[0][0]}"
    assert get_processor("MNLI-MM").get_labels() == ["contradiction", "entailment", "neutral"]


XNLI_HEADER = ("language gold_label sentence1_binary_parse sentence2_binary_parse sentence1_parse "
               "sentence2_parse sentence1 sentence2 promptID pairID genre label1 label2 label3 "
               "label4 label5").split()


def xnli_row(lang: str, label: str, a: str, b: str) -> list[str]:
    return [lang, label, "", "", "", "", a, b, "1", "1a", "facetoface"] + [label] * 5


def xnli_dir(tmp_path: Path) -> Path:
    d = tmp_path / "XNLI"
    write(d / "multinli" / "multinli.train.zh.tsv", tsv([
        ["premise", "hypo", "label"], ["前提一", "假设一", "contradictory"],
        ["前提二", "假设二", "entailment"], ["前提三", "假设三", "neutral"]]))
    write(d / "multinli" / "multinli.train.de.tsv", tsv([
        ["premise", "hypo", "label"], ["Prämisse", "Hypothese", "neutral"]]))
    dev = [XNLI_HEADER, xnli_row("en", "neutral", "a en", "b en"),
           xnli_row("zh", "entailment", "甲", "乙"), xnli_row("de", "contradiction", "a de", "b de"),
           xnli_row("zh", "contradiction", "丙", "丁")]
    write(d / "xnli.dev.tsv", tsv(dev))
    write(d / "xnli.test.tsv", tsv(dev))
    return d


def test_xnli(tmp_path):
    d = str(xnli_dir(tmp_path))
    zh = XnliProcessor()
    assert zh.language == "zh"
    assert zh.get_train_examples(d) == [
        InputExample("train-1", "前提一", "假设一", "contradiction"),
        InputExample("train-2", "前提二", "假设二", "entailment"),
        InputExample("train-3", "前提三", "假设三", "neutral")]
    # guids count every row of the shared file, as in the original (other languages included)
    assert zh.get_dev_examples(d) == [InputExample("dev-2", "甲", "乙", "entailment"),
                                      InputExample("dev-4", "丙", "丁", "contradiction")]
    assert [e.guid for e in zh.get_test_examples(d)] == ["test-2", "test-4"]
    de = get_processor("XNLI", language="de")
    assert de.get_train_examples(d) == [InputExample("train-1", "Prämisse", "Hypothese", "neutral")]
    assert de.get_dev_examples(d) == [InputExample("dev-3", "a de", "b de", "contradiction")]
    msg = error_of(XnliProcessor(language="fr").get_dev_examples, d)
    assert "xnli.dev.tsv" in msg and "'fr'" in msg and "de, en, zh" in msg
    msg = error_of(XnliProcessor(language="fr").get_train_examples, d)
    assert "multinli.train.fr.tsv" in msg and "no such file" in msg


def test_qqp_skips_malformed_rows(tmp_path, caplog):
    header = ["id", "qid1", "qid2", "question1", "question2", "is_duplicate"]
    text = tsv([header, ["1", "11", "12", "How do I learn Python?", "How to learn Python?", "1"],
                # a record broken by an embedded newline: a 4-field head, then a 3-field tail
                ["2", "21", "22", "Is the Prophet"],
                ['"', "Was Muhammad a real historical figure? What is the evidence?", "0"],
                ["3", "31", "32", "What is AI?", "What is ML?", "0"]])
    path = write(tmp_path / "QQP" / "train.tsv", text)
    write(tmp_path / "QQP" / "test.tsv", tsv([["id", "question1", "question2"], ["0", "q1", "q2"]]))
    processor = get_processor("qqp")
    with caplog.at_level(logging.WARNING):
        examples = processor.get_train_examples(str(tmp_path / "QQP"))
    assert examples == [InputExample("train-1", "How do I learn Python?", "How to learn Python?",
                                     "1"),
                        InputExample("train-3", "What is AI?", "What is ML?", "0")]
    assert processor.skipped_rows == {str(path): 2}
    warned = [r.getMessage() for r in caplog.records]
    assert any(str(path) in m and "line 3" in m for m in warned)
    assert any(str(path) in m and "line 4" in m for m in warned)
    assert processor.get_test_examples(str(tmp_path / "QQP")) == [
        InputExample("test-0", "q1", "q2", "0")]
    # a bad label is still an error, not a skip
    write(tmp_path / "QQP" / "dev.tsv", tsv([header, ["9", "1", "2", "a", "b", "yes"]]))
    msg = error_of(processor.get_dev_examples, str(tmp_path / "QQP"))
    assert "dev.tsv, line 2" in msg and "'yes'" in msg


# -- errors ------------------------------------------------------------------------------------

MRPC_HEADER = ["Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"]


def test_missing_dir_and_file(tmp_path):
    msg = error_of(MrpcProcessor().get_train_examples, str(tmp_path / "nope"))
    assert "nope" in msg and "no such directory" in msg
    msg = error_of(MrpcProcessor().get_train_examples, str(tmp_path))
    assert "train.tsv" in msg and "no such file" in msg


def test_empty_and_header_only_files(tmp_path):
    write(tmp_path / "train.tsv", "")
    write(tmp_path / "dev.tsv", tsv([MRPC_HEADER]))
    msg = error_of(MrpcProcessor().get_train_examples, str(tmp_path))
    assert "train.tsv" in msg and "no data rows" in msg
    msg = error_of(MrpcProcessor().get_dev_examples, str(tmp_path))
    assert "dev.tsv" in msg and "no data rows" in msg


def test_ragged_row(tmp_path):
    write(tmp_path / "train.tsv", tsv([MRPC_HEADER, ["1", "1", "2", "a", "b"], ["0", "3", "4", "c"]]))
    msg = error_of(MrpcProcessor().get_train_examples, str(tmp_path))
    assert "train.tsv, line 3" in msg and "expected 5" in msg and "found 4" in msg
    write(tmp_path / "dev.tsv", tsv([["s", "1", "", "ok"], ["s", "1", "", "ok", "extra"]]))
    msg = error_of(ColaProcessor().get_dev_examples, str(tmp_path))
    assert "dev.tsv, line 2" in msg and "expected 4" in msg and "found 5" in msg
    write(tmp_path / "test.tsv", tsv([["index", "question"], ["0", "q"]]))  # a file of the wrong task
    msg = error_of(get_processor("qnli").get_test_examples, str(tmp_path))
    assert "test.tsv, line 1" in msg and "header has 2 columns" in msg and "at least 3" in msg


def test_unknown_label(tmp_path):
    write(tmp_path / "dev.tsv", tsv([MRPC_HEADER, ["1", "1", "2", "a", "b"], ["2", "3", "4", "c",
                                                                            "d"]]))
    msg = error_of(MrpcProcessor().get_dev_examples, str(tmp_path))
    assert "dev.tsv, line 3" in msg and "'2'" in msg and "'0', '1'" in msg
    write(tmp_path / "train.tsv", tsv([["i", "g", "f", "y", "o", "s1", "s2", "a", "b", "score"],
                                       ["0", "g", "f", "y", "o", "n", "n", "a", "b", "high"]]))
    msg = error_of(StsbProcessor().get_train_examples, str(tmp_path))
    assert "train.tsv, line 2" in msg and "'high'" in msg


def test_not_utf8(tmp_path):
    write(tmp_path / "train.tsv", b"Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n"
                                  b"1\t1\t2\ta\tb\n0\t3\t4\tcaf\xe9\td\n")
    msg = error_of(MrpcProcessor().get_train_examples, str(tmp_path))
    assert "train.tsv, line 3" in msg and "UTF-8" in msg and "0xe9" in msg


def test_bom_and_crlf(tmp_path):
    write(tmp_path / "train.tsv", b"\xef\xbb\xbfQuality\t#1 ID\t#2 ID\t#1 String\t#2 String\r\n"
                                  b"1\t1\t2\ta \"q\t b\r\n\n")  # trailing blank line is ignored
    assert MrpcProcessor().get_train_examples(str(tmp_path)) == [
        InputExample("train-1", 'a "q', " b", "1")]
    assert DataProcessor._read_tsv(str(tmp_path / "train.tsv"))[0][0] == "Quality"


def test_get_processor():
    assert set(PROCESSORS) == {"cola", "mnli", "mnli-mm", "mrpc", "xnli", "sst-2", "qqp", "qnli",
                               "rte", "wnli", "sts-b", "generic"}
    assert isinstance(get_processor("MRPC"), MrpcProcessor)
    assert get_processor("sts-b").is_regression and not get_processor("rte").is_regression
    assert get_processor("sts-b").get_labels() == [None]
    msg = error_of(get_processor, "glue")
    assert "'glue'" in msg and "mrpc" in msg and "sts-b" in msg
    assert "language" in error_of(get_processor, "mrpc", language="de")


def test_examples_basics():
    assert InputExample("g", "a") == InputExample(guid="g", text_a="a", text_b=None, label=None)
    assert PaddingInputExample() == PaddingInputExample() != InputExample("g", "a")
    with pytest.raises(NotImplementedError):
        DataProcessor().get_labels()


def test_remote_paths_via_gfile():
    tf = pytest.importorskip("tensorflow")
    root = "ram://bert_finetune_test_processors/MRPC"
    with tf.io.gfile.GFile(root + "/dev.tsv", "wb") as f:
        f.write(tsv([MRPC_HEADER, ["0", "1", "2", "x", "y"]]).encode())
    assert MrpcProcessor().get_dev_examples(root) == [InputExample("dev-1", "x", "y", "0")]
    assert "no such file" in error_of(MrpcProcessor().get_train_examples, root)


# -- generic -----------------------------------------------------------------------------------

def test_generic_tsv_header_names(tmp_path):
    write(tmp_path / "train.tsv", tsv([["id", "premise", "hypothesis", "gold"],
                                       ["a", "p1", "h1", "yes"], ["b", "p2", "h2", "no"],
                                       ["c", "p3", "h3", "maybe"]]))
    write(tmp_path / "test.tsv", tsv([["id", "premise", "hypothesis"], ["z", "p9", "h9"]]))
    p = GenericProcessor("tsv", "premise", "hypothesis", label_column="gold", has_header=True)
    assert p.get_train_examples(str(tmp_path)) == [
        InputExample("train-0", "p1", "h1", "yes"), InputExample("train-1", "p2", "h2", "no"),
        InputExample("train-2", "p3", "h3", "maybe")]
    assert p.get_labels() == ["maybe", "no", "yes"]  # inferred, sorted
    assert p.get_test_examples(str(tmp_path)) == [InputExample("test-0", "p9", "h9", "maybe")]
    # an integer string with a header is an index
    q = GenericProcessor("tsv", "1", 2, label_column="3", labels=["yes", "no", "maybe"])
    assert q.get_train_examples(str(tmp_path))[0] == InputExample("train-0", "p1", "h1", "yes")
    assert q.get_labels() == ["yes", "no", "maybe"]
    msg = error_of(GenericProcessor("tsv", "sentence", label_column="gold").get_train_examples,
                   str(tmp_path))
    assert "train.tsv" in msg and "'sentence'" in msg and "id, premise, hypothesis, gold" in msg


def test_generic_csv_indices_without_header(tmp_path):
    write(tmp_path / "train.csv", '10,"a, quoted ""text"""\n2,plain\n10,"two\nlines"\n')
    write(tmp_path / "dev.csv", "2,x\n7,y\n")
    write(tmp_path / "test.csv", "only text\n")
    p = GenericProcessor("csv", 1, label_column=0, has_header=False)
    assert p.get_train_examples(str(tmp_path)) == [
        InputExample("train-0", 'a, quoted "text"', None, "10"),
        InputExample("train-1", "plain", None, "2"),
        InputExample("train-2", "two\nlines", None, "10")]
    assert p.get_labels() == ["2", "10"]  # integer labels sort numerically
    msg = error_of(p.get_dev_examples, str(tmp_path))
    assert "dev.csv, line 2" in msg and "'7'" in msg and "'2', '10'" in msg
    # the test file may lack the label column: test examples get the first label
    p0 = GenericProcessor("csv", 0, label_column=1, has_header=False, labels=["neg", "pos"])
    assert p0.get_test_examples(str(tmp_path)) == [InputExample("test-0", "only text", None,
                                                                "neg")]
    msg = error_of(GenericProcessor("csv", "text", label_column=0, has_header=False)
                   .get_train_examples, str(tmp_path))
    assert "train.csv" in msg and "has no header" in msg
    msg = error_of(GenericProcessor("csv", 5, label_column=0, has_header=False)
                   .get_train_examples, str(tmp_path))
    assert "train.csv" in msg and "index 5" in msg and "2 columns" in msg


def test_generic_csv_ragged_and_parse_error(tmp_path):
    write(tmp_path / "train.csv", "text,label\na,1\nb,0,extra\n")
    msg = error_of(GenericProcessor("csv", "text", label_column="label").get_train_examples,
                   str(tmp_path))
    assert "train.csv, line 3" in msg and "expected 2" in msg and "found 3" in msg
    write(tmp_path / "dev.csv", "text,label\na,1\n" + "b" * 140_000 + ",0\n")
    msg = error_of(GenericProcessor("csv", "text", label_column="label", labels=["0", "1"])
                   .get_dev_examples, str(tmp_path))
    assert "dev.csv, line 3" in msg


def test_generic_jsonl(tmp_path):
    lines = [{"q": "first", "a": "one", "y": 1}, {"q": "second", "a": "two", "y": 0}, {}]
    write(tmp_path / "train.jsonl", "\n".join(json.dumps(x) for x in lines[:2]) + "\n\n")
    write(tmp_path / "dev.jsonl", json.dumps(lines[0]) + "\n" + json.dumps(lines[2]) + "\n")
    write(tmp_path / "test.jsonl", json.dumps({"q": "t", "a": "u"}) + "\n")
    p = GenericProcessor("jsonl", "q", "a", label_column="y", data_dir=str(tmp_path))
    assert p.get_labels() == ["0", "1"]  # inferred from data_dir before any get_*_examples
    assert p.get_train_examples(str(tmp_path)) == [InputExample("train-0", "first", "one", "1"),
                                                   InputExample("train-1", "second", "two", "0")]
    assert p.get_test_examples(str(tmp_path)) == [InputExample("test-0", "t", "u", "0")]
    msg = error_of(p.get_dev_examples, str(tmp_path))
    assert "dev.jsonl, line 2" in msg and "'q'" in msg
    write(tmp_path / "dev.jsonl", '{"q": "x", "a": "y", "y": 1}\n[1, 2]\n')
    msg = error_of(p.get_dev_examples, str(tmp_path))
    assert "dev.jsonl, line 2" in msg and "JSON object" in msg
    write(tmp_path / "dev.jsonl", '{"q": "x", "a": "y", "y": 1}\n{"q": \n')
    assert "dev.jsonl, line 2" in error_of(p.get_dev_examples, str(tmp_path))
    write(tmp_path / "dev.jsonl", '{"q": 3, "a": "y", "y": 1}\n')
    assert "dev.jsonl, line 1" in error_of(p.get_dev_examples, str(tmp_path))
    assert "labels unknown" in error_of(GenericProcessor("jsonl", "q", label_column="y").get_labels)


def test_generic_regression_and_real_mrpc_header(tmp_path):
    write(tmp_path / "train.tsv", tsv([["s", "score"], ["a", "0.5"], ["b", "4.25"]]))
    write(tmp_path / "dev.tsv", tsv([["s", "score"], ["a", "n/a"]]))
    p = GenericProcessor("tsv", "s", label_column="score", is_regression=True)
    assert [e.label for e in p.get_train_examples(str(tmp_path))] == ["0.5", "4.25"]
    assert p.get_labels() == [None] and p.placeholder_label() == "0.0"
    assert "dev.tsv, line 2" in error_of(p.get_dev_examples, str(tmp_path))
    assert "input_format" in error_of(GenericProcessor, "xlsx", "s", label_column="y")
    assert "distinct" in error_of(GenericProcessor, "tsv", "s", label_column="y", labels=["a", "a"])
    assert GenericProcessor("tsv", "s", label_column="y", labels=[]).labels is None
    needs_shared()
    mrpc = tmp_path / "mrpc"
    mrpc.mkdir()
    shutil.copy(GLUE / "MRPC" / "dev.tsv", mrpc / "dev.tsv")
    # the header's first name only matches once the UTF-8 BOM is dropped
    g = GenericProcessor("tsv", "#1 String", "#2 String", label_column="Quality",
                         labels=["0", "1"])
    assert [(e.text_a, e.text_b, e.label) for e in g.get_dev_examples(str(mrpc))] == [
        (e.text_a, e.text_b, e.label) for e in MrpcProcessor().get_dev_examples(str(mrpc))]
