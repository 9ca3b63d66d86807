"""The console scripts (bert-classify, bert-squad, ...): flags, checks and the quiet start."""

from bert_finetune.allocator import use_bfc_allocator

use_bfc_allocator()  # before any command imports TensorFlow
