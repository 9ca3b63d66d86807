"""bert_finetune: Google's original BERT scripts on current TensorFlow."""

__version__ = "0.1.0"
