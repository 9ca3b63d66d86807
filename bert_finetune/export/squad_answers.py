"""bert-squad's answer selection as TensorFlow ops: (question, context) strings -> answer text.

The serving graph of a bert-squad model (export/squad_serving.py) does, for each question and
context, what `bert-squad --do_predict` does:

  context -> whitespace words (run_squad.py's splitter: " \\t\\r\\n" and U+202F) -> each word's
  BasicTokenizer tokens -> their word pieces (FullTokenizer's ids, per word as the original)
  -> windows `[CLS] question[:max_query_length] [SEP] context pieces [SEP]`, a long context
  cut every doc_stride pieces, each piece's max-context window marked -> start/end logits ->
  per window the n_best_size best starts and ends paired, a pair kept when both lie in the
  context, the start has its max context there, end >= start and the span has at most
  max_answer_length pieces -> ranked over all windows by start + end logit (float64, ties in
  the original's build order) -> `get_final_text` of each -> the n-best list (distinct texts;
  SQuAD 2.0: the null answer of the window with the smallest one too) -> its softmax.

`get_final_text` is reproduced exactly, on character positions instead of strings: the
prediction's text is a stretch of the words' BasicTokenizer text (its pieces joined), its first
occurrence in that text (the original's `str.find`) is mapped back to the context through the
space-free character alignment, and where the original gave up (a piece is [UNK], or the
tokenizer changed the number of characters, e.g. Hangul decomposed by NFD) the answer is the
whole words, as there.

Shape legend: B = batch, N = windows of the batch, T = max_seq_length, W = words, J =
BasicTokenizer tokens, D = context pieces, K = n-best starts (or ends) per window, C = candidate
spans of an example (windows * K * K, + 1 null).
"""

from __future__ import annotations

import dataclasses

import tensorflow as tf

from bert_finetune.export.text_preprocessing import (
    BertPreprocessor,
    basic_tokenize,
    import_tensorflow_text,
    pack_inputs,
)

# run_squad.py's `is_whitespace`: what separates the context's words (doc_tokens).
CONTEXT_WHITESPACE = "[ \\t\\r\\n\\x{202F}]+"
EMPTY_ANSWER = "empty"  # the original's nonce when no span qualifies (SQuAD 1.1)
_BIG = 2 ** 40


def _dense(rt: tf.RaggedTensor, default=0) -> tf.Tensor:
    """[B, max(longest row, 1)]: at least one column, so that a clipped index always exists."""
    width = tf.maximum(tf.reduce_max(rt.row_lengths()), 1)
    return rt.to_tensor(default_value=default, shape=tf.stack([rt.nrows(), width]))


def _exclusive_cumsum(rt: tf.RaggedTensor) -> tf.RaggedTensor:
    """Per row: the sum of the values before each one."""
    return rt.with_flat_values(tf.math.cumsum(rt.flat_values, exclusive=True)
                               - tf.gather(tf.math.cumsum(rt.flat_values, exclusive=True),
                                           tf.gather(rt.row_starts(), rt.value_rowids())))


def _chars_before(strings: tf.Tensor, byte_offsets: tf.Tensor) -> tf.Tensor:
    """The number of UTF-8 characters in strings[i][:byte_offsets[i]] (elementwise)."""
    head = tf.strings.substr(strings, tf.zeros_like(byte_offsets), byte_offsets, unit="BYTE")
    return tf.cast(tf.strings.length(head, unit="UTF8_CHAR"), tf.int64)


class ContextPieces:
    """The context's words, tokens and pieces, with where each lies (dense [B, ...] int64).

    Positions "in TOK" refer to TOK = the context's BasicTokenizer tokens joined by single
    spaces; the text `get_final_text` searches for a span is a stretch of it.
    """

    def __init__(self, pre: BertPreprocessor, context: tf.Tensor):
        tf_text = import_tensorflow_text()
        # The splitter stops at a NUL byte; U+0001 has its length and, like NUL, is dropped by
        # BasicTokenizer, so words and offsets stay the original's.
        context = tf.strings.regex_replace(context, "\\x00", "\x01")
        words, wbeg, wend = tf_text.regex_split_with_offsets(context, CONTEXT_WHITESPACE)
        row_ctx = tf.gather(context, words.value_rowids())
        self.word_begin = _dense(words.with_flat_values(
            _chars_before(row_ctx, wbeg.flat_values)))  # [B, W] char offset in the context
        self.word_end = _dense(words.with_flat_values(
            _chars_before(row_ctx, wend.flat_values)))  # [B, W] exclusive
        word_len = words.with_flat_values(
            tf.cast(tf.strings.length(words.flat_values, unit="UTF8_CHAR"), tf.int64))
        self.word_orig_ns = _dense(_exclusive_cumsum(word_len), _BIG)  # [B, W]
        self.word_len = _dense(word_len)

        # BasicTokenizer on each word alone (the original tokenized word by word).
        tokens_wk = basic_tokenize(words.flat_values, pre.do_lower_case)  # [N_w, (K)]
        tokens_wk = tf.RaggedTensor.from_row_splits(tokens_wk, words.row_splits)  # [B,(W),(J)]
        tokens = tokens_wk.merge_dims(1, 2)  # [B, (J)]
        tok_len = tokens.with_flat_values(
            tf.cast(tf.strings.length(tokens.flat_values, unit="UTF8_CHAR"), tf.int64))
        self.tok_text = tf.strings.reduce_join(tokens, axis=1, separator=" ")  # [B] TOK
        tok_ns = _exclusive_cumsum(tok_len)  # chars (no spaces) before each token
        tok_j = tok_len.with_flat_values(
            tf.range(tf.size(tok_len.flat_values, out_type=tf.int64))
            - tf.gather(tok_len.row_starts(), tok_len.value_rowids()))  # index in its row
        self.tok_start = _dense(tok_ns + tok_j, _BIG)  # [B, J] position in TOK
        # Per word: its tokens' characters and the TOK position of its first token.
        word_tok_len = tf.reduce_sum(tokens_wk.with_flat_values(tok_len.flat_values), axis=2)
        self.word_tok_ns = _dense(_exclusive_cumsum(word_tok_len))  # [B, W]
        self.word_tok_len = _dense(word_tok_len)

        pieces, pbeg, pend = pre.word_pieces(tokens, with_offsets=True)  # [B, (J), (P)]
        piece_tok = pieces.values.value_rowids()  # [N_p] global token of each piece
        tok_str = tf.gather(tokens.flat_values, piece_tok)
        begin_char = _chars_before(tok_str, pbeg.flat_values)
        end_char = _chars_before(tok_str, pend.flat_values)
        tok_row = tf.gather(tokens.value_rowids(), piece_tok)  # [N_p] example of each piece
        piece_start = tf.gather(tokens.row_starts(), tok_row)
        # Pieces of an example, in order: [B, (D)].
        by_row = tf.RaggedTensor.from_value_rowids
        nrows = tf.shape(context, out_type=tf.int64)[0]
        self.ids = by_row(pieces.flat_values, tok_row, nrows)  # [B, (D)] int32
        local_tok = piece_tok - piece_start
        start_in_tok = tf.gather(tok_j.flat_values + tok_ns.flat_values, piece_tok)
        self.piece_begin = _dense(by_row(start_in_tok + begin_char, tok_row, nrows))  # TOK pos
        self.piece_last = _dense(by_row(start_in_tok + end_char - 1, tok_row, nrows))
        self.piece_tok = _dense(by_row(local_tok, tok_row, nrows))  # [B, D] token index
        word_of_tok = tokens_wk.merge_dims(0, 1).value_rowids()  # global word of each token
        piece_word = tf.gather(word_of_tok, piece_tok) - tf.gather(words.row_starts(), tok_row)
        self.piece_word = _dense(by_row(piece_word, tok_row, nrows), _BIG)  # [B, D] sorted
        is_unk = tf.cast(tf.equal(pieces.flat_values, pre.unk_id), tf.int64)
        # [B, D + 1]: [UNK] pieces before each position (a span's count is a difference).
        unk = _dense(by_row(is_unk, tok_row, nrows))
        self.unk_before = tf.pad(tf.math.cumsum(unk, axis=1), [[0, 0], [1, 0]])
        self.num_pieces = self.ids.row_lengths()  # [B]


def _first_occurrence(tok_text: tf.Tensor, lo: tf.Tensor, at: tf.Tensor,
                      length: tf.Tensor) -> tf.Tensor:
    """For each span: the first q in [lo, at] with TOK[q:q+length] == TOK[at:at+length].

    All args [N] (tok_text already gathered per span). This is `str.find` of the original,
    on the words' text, which starts at `lo`; most spans start a word, so `lo == at` and
    nothing is compared.
    """
    shifts = tf.ragged.range(lo, at)  # [N, (S)] earlier positions to try
    rows = shifts.value_rowids()
    text = tf.gather(tok_text, rows)
    want = tf.strings.substr(tok_text, at, length, unit="UTF8_CHAR")
    got = tf.strings.substr(text, shifts.flat_values, tf.gather(length, rows), unit="UTF8_CHAR")
    hit = tf.where(tf.equal(got, tf.gather(want, rows)), shifts.flat_values,
                   tf.gather(at, rows))
    first = tf.math.unsorted_segment_min(hit, rows, tf.shape(at, out_type=tf.int64)[0])
    return tf.minimum(first, at)  # rows without shifts get the dtype's max from segment_min


def _batch_gather(params: tf.Tensor, indices: tf.Tensor) -> tf.Tensor:
    """params[b, indices[b, ...]], indices clipped into the row: padding and spans that are not
    candidates read some value that is then masked out, never an out-of-range error."""
    last = tf.cast(tf.shape(params)[1] - 1, indices.dtype)
    return tf.gather(params, tf.clip_by_value(indices, 0, last), batch_dims=1)


def span_texts(ctx: ContextPieces, context: tf.Tensor, start: tf.Tensor, end: tf.Tensor):
    """`get_final_text` of context pieces start..end (indices into the context's pieces).

    start, end: [B, C] int64 (valid spans only matter). Returns (text [B, C] string,
    char_begin [B, C], char_end [B, C] int64: the answer is context[char_begin:char_end] with
    each run of whitespace between words written as one space, as the original joined words).
    """
    ws = _batch_gather(ctx.piece_word, start)  # [B, C] first and last word of the span
    we = _batch_gather(ctx.piece_word, end)
    ps = _batch_gather(ctx.piece_begin, start)  # TOK positions of the prediction's text
    pe = _batch_gather(ctx.piece_last, end)
    js = _batch_gather(ctx.piece_tok, start)
    je = _batch_gather(ctx.piece_tok, end)
    has_unk = (_batch_gather(ctx.unk_before, end + 1)
               - _batch_gather(ctx.unk_before, start)) > 0
    # The words' BasicTokenizer text starts at the first token of word ws.
    first_piece = tf.searchsorted(ctx.piece_word, ws, side="left", out_type=tf.int64)  # of word ws
    lo = tf.minimum(_batch_gather(ctx.piece_begin, first_piece), ps)
    shape = tf.shape(ps)
    flat = lambda x: tf.reshape(x, [-1])  # noqa: E731
    tok_text = flat(tf.broadcast_to(ctx.tok_text[:, tf.newaxis], shape))
    q = tf.reshape(_first_occurrence(tok_text, flat(lo), flat(ps), flat(pe - ps + 1)), shape)
    # Space-free character positions: in TOK, relative to the words' text; then in the words.
    q_tok = tf.searchsorted(ctx.tok_start, q, side="right", out_type=tf.int64) - 1
    ns_start = q - q_tok - _batch_gather(ctx.word_tok_ns, ws)
    ns_end = ns_start + (pe - ps) - (je - js)
    orig_ns0 = _batch_gather(ctx.word_orig_ns, ws)
    orig_len = _batch_gather(ctx.word_orig_ns, we) + _batch_gather(ctx.word_len, we) - orig_ns0
    tok_len = (_batch_gather(ctx.word_tok_ns, we) + _batch_gather(ctx.word_tok_len, we)
               - _batch_gather(ctx.word_tok_ns, ws))
    exact = ~has_unk & tf.equal(orig_len, tok_len)

    def to_context(ns: tf.Tensor) -> tf.Tensor:
        g = orig_ns0 + ns
        w = tf.searchsorted(ctx.word_orig_ns, g, side="right", out_type=tf.int64) - 1
        return _batch_gather(ctx.word_begin, w) + g - _batch_gather(ctx.word_orig_ns, w)

    begin = tf.where(exact, to_context(tf.where(exact, ns_start, 0)),
                     _batch_gather(ctx.word_begin, ws))
    end = tf.where(exact, to_context(tf.where(exact, ns_end, 0)) + 1,
                   _batch_gather(ctx.word_end, we))
    row_ctx = tf.broadcast_to(context[:, tf.newaxis], shape)
    size = tf.cast(tf.strings.length(row_ctx, unit="UTF8_CHAR"), tf.int64)
    begin = tf.clip_by_value(begin, 0, size)  # only spans that are not candidates need it
    end = tf.clip_by_value(end, begin, size)
    text = tf.strings.substr(row_ctx, begin, end - begin, unit="UTF8_CHAR")
    text = tf.strings.regex_replace(text, CONTEXT_WHITESPACE, " ")
    return text, begin, end


@dataclasses.dataclass
class WindowBatch:
    """bert-squad's windows (doc spans) of a batch of examples, flattened: N windows in all.

    Window i is example `row[i]`'s window number `index[i]`; its context pieces are
    `doc_start[i] ..` (`doc_length[i]` of them) at positions `doc_offset[i] ..` of its features.
    `max_context[i, t]` says whether the piece at position t has its maximum context there.
    """

    features: dict[str, tf.Tensor]  # [N, T] int32
    row: tf.Tensor  # [N] int64
    index: tf.Tensor  # [N]
    doc_start: tf.Tensor  # [N]
    doc_offset: tf.Tensor  # [N]
    doc_length: tf.Tensor  # [N]
    max_context: tf.Tensor  # [N, T] bool
    num_windows: tf.Tensor  # [B]


def pack_windows(pre: BertPreprocessor, question: tf.Tensor, ctx: ContextPieces,
                 max_query_length: int, doc_stride: int) -> WindowBatch:
    """Every window of each example, as `convert_examples_to_features` builds them.

    A context longer than the room the question leaves is cut into windows of that many pieces,
    each `doc_stride` pieces after the previous one (the last one ends with the context). An
    empty context gets one empty window (the original made none and crashed).
    """
    seq_len = pre.seq_len
    query = pre.tokenize(question)[:, :max_query_length]  # [B, (Q)]
    query_len = query.row_lengths()
    room = seq_len - query_len - 3  # [B] pieces a window holds (>= 1: run record checked)
    step = tf.minimum(room, doc_stride)
    total = ctx.num_pieces
    over = tf.maximum(total - room, 0)
    num = 1 + (over + step - 1) // step  # [B]
    batch = tf.shape(num, out_type=tf.int64)[0]
    row = tf.repeat(tf.range(batch), num)  # [N]
    index = tf.ragged.range(num).flat_values
    doc_start = index * tf.gather(step, row)
    doc_length = tf.maximum(tf.minimum(tf.gather(total, row) - doc_start, tf.gather(room, row)),
                            0)
    positions = tf.ragged.range(doc_start, doc_start + doc_length)  # [N, (L)] in the context
    flat = positions + tf.gather(ctx.ids.row_starts(), row)[:, tf.newaxis]
    doc = tf.gather(ctx.ids.flat_values, flat)  # [N, (L)] ids
    features = pack_inputs(tf.gather(query, row), doc, seq_len, pre.cls_id, pre.sep_id)
    doc_offset = tf.gather(query_len, row) + 2

    # `_check_is_max_context`: each piece's best window, min(left, right context) + 0.01 *
    # length (float64 as the original's Python floats), the first one on ties.
    by_row = lambda x, default: tf.RaggedTensor.from_value_rowids(  # noqa: E731
        x, row, batch).to_tensor(default_value=default)  # [B, Wmax]
    starts, lengths = by_row(doc_start, 0), by_row(doc_length, 0)
    piece = tf.range(tf.reduce_max(total) + 1)[tf.newaxis, :, tf.newaxis]  # [1, D+1, 1]
    first, length = starts[:, tf.newaxis, :], lengths[:, tf.newaxis, :]  # [B, 1, Wmax]
    last = first + length - 1
    inside = (piece >= first) & (piece <= last)  # [B, D+1, Wmax]
    score = tf.cast(tf.minimum(piece - first, last - piece), tf.float64) + 0.01 * tf.cast(
        length, tf.float64)
    score = tf.where(inside, score, -float("inf"))
    best_score = tf.reduce_max(score, axis=2, keepdims=True)
    window_ids = tf.range(tf.shape(score, out_type=tf.int64)[2])
    best = tf.reduce_min(tf.where(inside & tf.equal(score, best_score), window_ids, _BIG),
                         axis=2)  # [B, D+1]
    t = tf.range(seq_len, dtype=tf.int64)[tf.newaxis, :]  # window positions [1, T]
    in_doc = t - doc_offset[:, tf.newaxis]  # [N, T] piece number within the window
    in_window = (in_doc >= 0) & (in_doc < doc_length[:, tf.newaxis])
    best_here = _batch_gather(tf.gather(best, row), doc_start[:, tf.newaxis] + in_doc)
    max_context = in_window & tf.equal(best_here, index[:, tf.newaxis])
    return WindowBatch(features, row, index, doc_start, doc_offset, doc_length, max_context,
                       num)


def best_answers(ctx: ContextPieces, context: tf.Tensor, windows: WindowBatch,
                 start_logits: tf.Tensor, end_logits: tf.Tensor, n_best_size: int,
                 max_answer_length: int, version_2_with_negative: bool,
                 null_score_diff_threshold: float) -> dict[str, tf.Tensor]:
    """predictions.json's answer of each example (over all its windows), with its n-best
    probability.

    start_logits, end_logits: [N, T] float32, row i <-> window i. Returns answer [B] string,
    score [B] (start + end logit of the answer; SQuAD 2.0's "" answer: the null score),
    probability [B] (its entry's in nbest_predictions.json), answer_start / answer_end [B]
    int64 (characters of the context, -1 when there is no span) and, for SQuAD 2.0,
    null_score_diff [B] (null_odds.json).
    """
    w = windows
    seq_len = tf.shape(start_logits)[1]
    k = tf.minimum(n_best_size, seq_len)
    s_idx = tf.cast(tf.math.top_k(start_logits, k).indices, tf.int64)  # [N, K] lower index
    e_idx = tf.cast(tf.math.top_k(end_logits, k).indices, tf.int64)  # first on ties
    lo = w.doc_offset[:, tf.newaxis]
    hi = lo + w.doc_length[:, tf.newaxis]
    ok_s = (s_idx >= lo) & (s_idx < hi) & _batch_gather(w.max_context, s_idx)
    ok_e = (e_idx >= lo) & (e_idx < hi)
    length = e_idx[:, tf.newaxis, :] - s_idx[:, :, tf.newaxis] + 1  # [N, K(start), K(end)]
    ok = ok_s[:, :, tf.newaxis] & ok_e[:, tf.newaxis, :] & (length >= 1) & (
        length <= max_answer_length)
    sl64 = tf.cast(start_logits, tf.float64)
    el64 = tf.cast(end_logits, tf.float64)
    nwin = tf.shape(s_idx)[0]
    s_pos = tf.reshape(tf.broadcast_to(s_idx[:, :, tf.newaxis], tf.shape(ok)), [nwin, -1])
    e_pos = tf.reshape(tf.broadcast_to(e_idx[:, tf.newaxis, :], tf.shape(ok)), [nwin, -1])
    to_doc = (w.doc_start - w.doc_offset)[:, tf.newaxis]  # window position -> context piece
    batch = tf.shape(w.num_windows, out_type=tf.int64)[0]

    def per_example(x: tf.Tensor, default) -> tf.Tensor:
        """[N, KK] per window -> [B, Wmax * KK], windows in order (the original's order)."""
        dense = tf.RaggedTensor.from_value_rowids(x, w.row, batch).to_tensor(
            default_value=default)  # [B, Wmax, KK]
        return tf.reshape(dense, [batch, -1])

    starts = per_example(s_pos + to_doc, 0)  # [B, C] context pieces
    ends = per_example(e_pos + to_doc, 0)
    valid = per_example(tf.reshape(ok, [nwin, -1]), False)
    s_logit = per_example(_batch_gather(sl64, s_pos), 0.0)
    e_logit = per_example(_batch_gather(el64, e_pos), 0.0)
    is_null = tf.zeros_like(valid)
    if version_2_with_negative:
        # The null answer: the window with the smallest [CLS] score (the first on ties),
        # added after the spans.
        null = tf.RaggedTensor.from_value_rowids(sl64[:, 0] + el64[:, 0], w.row, batch)
        null = null.to_tensor(default_value=float("inf"))  # [B, Wmax]
        low = tf.reduce_min(null, axis=1, keepdims=True)
        at = tf.argmax(tf.cast(tf.equal(null, low), tf.int32), axis=1)  # first minimum
        win = tf.math.cumsum(w.num_windows, exclusive=True) + at  # [B] its window
        zero = tf.zeros([batch, 1], tf.int64)
        starts, ends = tf.concat([starts, zero], 1), tf.concat([ends, zero], 1)
        valid = tf.concat([valid, tf.ones([batch, 1], tf.bool)], 1)
        is_null = tf.concat([is_null, tf.ones([batch, 1], tf.bool)], 1)
        s_logit = tf.concat([s_logit, tf.gather(sl64[:, 0], win)[:, tf.newaxis]], 1)
        e_logit = tf.concat([e_logit, tf.gather(el64[:, 0], win)[:, tf.newaxis]], 1)
    score = s_logit + e_logit
    num = tf.shape(score)[1]
    # A stable ranking by score: top_k puts the lower (earlier built) index first on ties.
    order = tf.math.top_k(tf.where(valid, score, -float("inf")), num).indices
    starts, ends, valid, is_null, s_logit, e_logit, score = (
        _batch_gather(x, order) for x in (starts, ends, valid, is_null, s_logit, e_logit, score))

    span = valid & ~is_null
    safe = lambda x: tf.where(span, x, 0)  # noqa: E731  (piece index in the context)
    text, begin, end = span_texts(ctx, context, safe(starts), safe(ends))
    text = tf.where(span, text, "")
    # The n-best walk: distinct texts in rank order, the first n_best_size of them. A text
    # seen at a better rank is found by sorting on the text's hash (stable: rank order within
    # a hash) and comparing neighbours' texts: O(C log C) instead of all C * C pairs.
    key = tf.where(span, tf.strings.to_hash_bucket_fast(text, 2 ** 62),
                   -1 - tf.range(num, dtype=tf.int64)[tf.newaxis, :])  # non-spans never match
    by_key = tf.argsort(key, axis=1, stable=True)
    sorted_key, sorted_text = _batch_gather(key, by_key), _batch_gather(text, by_key)
    again = (sorted_key[:, 1:] == sorted_key[:, :-1]) & (sorted_text[:, 1:] == sorted_text[:, :-1])
    again = tf.pad(again, [[0, 0], [1, 0]])
    repeated = _batch_gather(again, tf.argsort(by_key, axis=1, stable=True))  # back to rank order
    kept = valid & ~repeated
    rank = tf.math.cumsum(tf.cast(kept, tf.int32), axis=1, exclusive=True)
    in_nbest = kept & (rank < n_best_size)
    if version_2_with_negative:
        in_nbest |= is_null  # "If we didn't include the empty option in the n-best, include it."
    # Softmax over the n-best scores (float64, as the original's math.exp on Python floats).
    masked = tf.where(in_nbest, score, -float("inf"))
    top = tf.reduce_max(masked, axis=1, keepdims=True)
    expo = tf.where(in_nbest, tf.exp(score - top), 0.0)
    prob = expo / tf.reduce_sum(expo, axis=1, keepdims=True)

    def first(mask: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """(position of the first True per row (0 if none), whether there is one)."""
        return tf.argmax(tf.cast(mask, tf.int32), axis=1), tf.reduce_any(mask, axis=1)

    best, has_best = first(in_nbest & span)
    pick = lambda x: _batch_gather(x, best)  # noqa: E731
    answer = tf.where(has_best, pick(text), EMPTY_ANSWER)
    out_score = tf.where(has_best, pick(score), 0.0)
    out_prob = tf.where(has_best, pick(prob), 1.0)
    a_begin = tf.where(has_best, pick(begin), -1)
    a_end = tf.where(has_best, pick(end), -1)
    out = {}
    if version_2_with_negative:
        null_at, _ = first(is_null)
        score_null = _batch_gather(score, null_at)
        # As the original: score_null - best start logit - best end logit (0, 0 without one).
        diff = score_null - tf.where(has_best, pick(s_logit), 0.0) \
            - tf.where(has_best, pick(e_logit), 0.0)
        no_answer = (diff > null_score_diff_threshold) | ~has_best
        answer = tf.where(no_answer, "", answer)
        out_score = tf.where(no_answer, score_null, out_score)
        out_prob = tf.where(no_answer, _batch_gather(prob, null_at), out_prob)
        a_begin = tf.where(no_answer, tf.constant(-1, tf.int64), a_begin)
        a_end = tf.where(no_answer, tf.constant(-1, tf.int64), a_end)
        out["null_score_diff"] = tf.cast(diff, tf.float32)
    out.update(answer=answer, score=tf.cast(out_score, tf.float32),
               probability=tf.cast(out_prob, tf.float32), answer_start=a_begin,
               answer_end=a_end)
    return out
