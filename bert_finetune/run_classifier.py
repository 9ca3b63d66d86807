"""The names of Google's `run_classifier.py`, importable from one place.

Code written against the original (`from run_classifier import DataProcessor, InputExample`)
keeps working as `from bert_finetune.run_classifier import ...`. The command line is
`bert-classify` (bert_finetune/cli/classify.py).
"""

from __future__ import annotations

from collections.abc import Callable

import tensorflow as tf

from bert_finetune import checkpoints, modeling
from bert_finetune.classify import ClassifierModel, create_model
from bert_finetune.data.examples import DataProcessor, InputExample, PaddingInputExample
from bert_finetune.data.features import (
    InputFeatures,
    _truncate_seq_pair,
    convert_examples_to_features,
    convert_single_example,
    file_based_convert_examples_to_features,
)
from bert_finetune.data.glue import (
    PROCESSORS,
    ColaProcessor,
    MnliProcessor,
    MrpcProcessor,
    XnliProcessor,
)
from bert_finetune.data.tfrecord import file_based_input_fn_builder

__all__ = [
    "ClassifierModel", "ColaProcessor", "DataProcessor", "InputExample", "InputFeatures",
    "MnliProcessor", "MrpcProcessor", "PROCESSORS", "PaddingInputExample", "XnliProcessor",
    "_truncate_seq_pair", "convert_examples_to_features", "convert_single_example",
    "create_model", "file_based_convert_examples_to_features", "file_based_input_fn_builder",
    "model_fn_builder",
]


def model_fn_builder(bert_config: modeling.BertConfig, num_labels: int,
                     init_checkpoint: str | None = None, use_one_hot_embeddings: bool = False,
                     is_regression: bool = False, compute_dtype: str = "float32"
                     ) -> Callable[[tf.distribute.Strategy], ClassifierModel]:
    """The original's `model_fn_builder`, for TF2: returns `model_fn(strategy) -> model`.

    `model_fn` builds the classifier under the strategy's scope and initialises the encoder from
    `init_checkpoint`. Training settings (learning rate, steps, warmup) go to
    `bert_finetune.runner.loops.TrainOptions` instead of into the model function.
    """

    def model_fn(strategy: tf.distribute.Strategy) -> ClassifierModel:
        with strategy.scope():
            model = ClassifierModel(bert_config, num_labels, is_regression,
                                    use_one_hot_embeddings, compute_dtype)
        if init_checkpoint:
            checkpoints.init_from_checkpoint(model.variables_by_name(), init_checkpoint)
        return model

    return model_fn
