"""`--help` for every console script: the command's flags with defaults, the original's first.

absl's `--help` lists only the key flags of the main module, and a console script's main module
(the pip-generated wrapper) defines none: `bert-classify --help` printed only "Try --helpfull".
`install_help()` (called by `run_main`) replaces `--help`/`--helpshort` with a listing of every
flag the command's own modules define (`bert_finetune.*`, or a user script run as `__main__`),
grouped: the original script's flags first, in the original's order, then the additions, by
group. `--helpfull` and `--helpxml` stay absl's.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Sequence

from absl import app, flags

FLAGS = flags.FLAGS

# The flags of Google's scripts, in the order the scripts define them.
ORIGINAL_FLAGS: dict[str, tuple[str, ...]] = {
    "run_classifier.py": (
        "data_dir", "bert_config_file", "task_name", "vocab_file", "output_dir",
        "init_checkpoint", "do_lower_case", "max_seq_length", "do_train", "do_eval", "do_predict",
        "train_batch_size", "eval_batch_size", "predict_batch_size", "learning_rate",
        "num_train_epochs", "warmup_proportion", "save_checkpoints_steps", "iterations_per_loop",
        "use_tpu", "tpu_name", "tpu_zone", "gcp_project", "master", "num_tpu_cores"),
    "run_squad.py": (
        "bert_config_file", "vocab_file", "output_dir", "train_file", "predict_file",
        "init_checkpoint", "do_lower_case", "max_seq_length", "doc_stride", "max_query_length",
        "do_train", "do_predict", "train_batch_size", "predict_batch_size", "learning_rate",
        "num_train_epochs", "warmup_proportion", "save_checkpoints_steps", "iterations_per_loop",
        "n_best_size", "max_answer_length", "use_tpu", "tpu_name", "tpu_zone", "gcp_project",
        "master", "num_tpu_cores", "verbose_logging", "version_2_with_negative",
        "null_score_diff_threshold"),
    "run_pretraining.py": (
        "bert_config_file", "input_file", "output_dir", "init_checkpoint", "max_seq_length",
        "max_predictions_per_seq", "do_train", "do_eval", "train_batch_size", "eval_batch_size",
        "learning_rate", "num_train_steps", "num_warmup_steps", "save_checkpoints_steps",
        "iterations_per_loop", "max_eval_steps", "use_tpu", "tpu_name", "tpu_zone",
        "gcp_project", "master", "num_tpu_cores"),
    "create_pretraining_data.py": (
        "input_file", "output_file", "vocab_file", "do_lower_case", "do_whole_word_mask",
        "max_seq_length", "max_predictions_per_seq", "random_seed", "dupe_factor",
        "masked_lm_prob", "short_seq_prob"),
    "extract_features.py": (
        "input_file", "output_file", "layers", "bert_config_file", "max_seq_length",
        "init_checkpoint", "vocab_file", "do_lower_case", "batch_size", "use_tpu", "master",
        "num_tpu_cores", "use_one_hot_embeddings"),
}

# Which original script each console script replaces (commands without one list one group).
ORIGINAL_SCRIPT: dict[str, str] = {
    "bert-classify": "run_classifier.py",
    "bert-squad": "run_squad.py",
    "bert-pretrain": "run_pretraining.py",
    "bert-create-pretraining-data": "create_pretraining_data.py",
    "bert-extract-features": "extract_features.py",
}

# flag name -> title of its group of additions (see cli/flags.flag_group).
_GROUP_OF: dict[str, str] = {}
_ABSL_HELP_FLAGS = ("help", "helpshort", "helpfull", "helpxml", "only_check_flags")


def set_group(names: Iterable[str], title: str) -> None:
    """Lists the flags `names` under `title` among a command's additions."""
    for name in names:
        _GROUP_OF[name] = title


def command_flags(main_module: str | None = None) -> list[flags.Flag]:
    """The flags of this command, in definition order.

    Those defined by bert_finetune's modules or by `main_module` (a user's script defining
    flags of its own); absl's, TensorFlow's and other libraries' are left to --helpfull.
    """
    found: list[flags.Flag] = []
    current = FLAGS._flags()  # noqa: SLF001 - the registry of defined flags, by name
    for module, module_flags in FLAGS.flags_by_module_dict().items():
        if not (module.startswith("bert_finetune") or module in (main_module, sys.argv[0])):
            continue
        for flag in module_flags:
            # A flag overridden since its module registered it is listed by its new definer.
            if (flag.name not in _ABSL_HELP_FLAGS and current.get(flag.name) is flag
                    and flag not in found):
                found.append(flag)
    return found


def _format(flag: flags.Flag) -> str:
    name = f"--[no]{flag.name}" if flag.boolean else f"--{flag.name}"
    text = flags.text_wrap(f"{name}: {flag.help or ''}".rstrip(), indent="    ",
                           firstline_indent="  ")
    default = flag.default_as_str if flag.default is not None else "None"
    text += "\n" + flags.text_wrap(f"(default: {default})", indent="    ")
    if flag.parser.syntactic_help:
        text += "\n" + flags.text_wrap(f"({flag.parser.syntactic_help})", indent="    ")
    return text


def render(program: str, doc: str | None, original: str | Sequence[str] | None = None,
           main_module: str | None = None) -> str:
    """The --help text: `doc`, then the command's flags in groups.

    `original` names the original script (a key of ORIGINAL_FLAGS) or lists its flag names;
    by default the script `program` replaces (ORIGINAL_SCRIPT), if any.
    """
    if original is None:
        original = ORIGINAL_SCRIPT.get(program)
    script = original if isinstance(original, str) else None
    original_names = list(ORIGINAL_FLAGS.get(original, ()) if script else original or ())
    ours = {f.name: f for f in command_flags(main_module)}
    groups: list[tuple[str, list[flags.Flag]]] = []
    first = [ours[n] for n in original_names if n in ours]
    if first:
        title = (f"Flags of the original {script} (same names and defaults)" if script
                 else "Flags of the original")
        groups.append((title, first))
    rest: dict[str, list[flags.Flag]] = {}
    default_title = f"{program} additions" if first else "Flags"
    for name, flag in ours.items():
        if name not in original_names:
            rest.setdefault(_GROUP_OF.get(name, default_title), []).append(flag)
    # The command's own additions first, then the shared groups in definition order.
    if default_title in rest:
        groups.append((default_title, rest.pop(default_title)))
    groups.extend(rest.items())
    lines = [(doc or f"USAGE: {program} [flags]").strip(), ""]
    for title, group in groups:
        lines.append(f"{title}:")
        lines.extend(_format(f) for f in group)
        lines.append("")
    lines.append("Try --helpfull to get a list of all flags (absl's and TensorFlow's too).")
    return "\n".join(lines) + "\n"


class _HelpFlag(flags.BooleanFlag):
    """--help / --helpshort / -?: prints `render(...)` to stdout and exits 0."""

    def __init__(self, name: str, short_name: str | None, text: Callable):
        super().__init__(name, False, "show this help", short_name=short_name,
                         allow_override=True, allow_hide_cpp=True)
        self._text = text

    def parse(self, argument) -> None:
        if self._parse(argument):
            try:
                sys.stdout.write(self._text())
                sys.stdout.flush()
            except BrokenPipeError:  # `bert-classify --help | head`
                pass
            sys.exit(0)


def install_help(program: str, doc: str | None, original: str | Sequence[str] | None = None,
                 main_module: str | None = None) -> None:
    """Replaces absl's --help/--helpshort with `render(...)`; --helpfull stays absl's.

    Also registers the command's flags as key flags of the main module, so absl's own
    `main_module_help()` and --helpxml's <key> agree with --help.
    """
    app.define_help_flags()  # idempotent; ours then override two of them

    def text() -> str:
        return render(program, doc, original, main_module)

    for name, short in (("help", "?"), ("helpshort", None)):
        flags.DEFINE_flag(_HelpFlag(name, short, text), module_name="absl.app")
    for flag in command_flags(main_module):
        FLAGS.register_key_flag_for_module(sys.argv[0], flag)
