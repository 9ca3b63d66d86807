"""`make bench`: the product's training step and predict path side by side with the peers.

    python -m bert_finetune.bench [--quick] [--update_readme] [--sizes=...] [--iters=N]

Modules: `spec` (sizes, FLOP formula, the plan of configurations, the bf16 decision; pure),
`measure` (one configuration in a child process: TensorFlow lives only there), `peers`
(`../shared/bench/run-peers` and matching its records), `report` (table, markdown, README block;
pure) and `__main__` (the command). Definitions follow `../shared/bench/README.md` so that the
figures compare with the peers' records of the same run.
"""
