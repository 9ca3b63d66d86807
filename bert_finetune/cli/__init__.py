"""The console scripts (bert-classify, bert-squad, ...): flags, checks and the quiet start."""

from bert_finetune.allocator import use_bfc_allocator
from bert_finetune.onednn import use_onednn

# Before any command imports TensorFlow: both are read when it loads.
use_bfc_allocator()
use_onednn()
