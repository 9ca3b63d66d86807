"""Task data: examples, processors (GLUE, XNLI, generic) and the file readers they share."""

from bert_finetune.data.examples import DataProcessor, InputExample, PaddingInputExample
from bert_finetune.data.generic import GenericProcessor
from bert_finetune.data.glue import PROCESSORS, get_processor

__all__ = [
    "PROCESSORS",
    "DataProcessor",
    "GenericProcessor",
    "InputExample",
    "PaddingInputExample",
    "get_processor",
]
