"""Model inputs for tokenizers unlike BERT's, as PyLate builds them: no special token before a
text (GPT-2, Qwen), no [MASK] token, truncation on the left."""
from __future__ import annotations

import pytest

from xtrieve.config import EncoderConfig
from xtrieve.encode.tokenize import TextProcessor

TEXTS = ["late interaction compares every query token with every document token",
         "the cat sat on the mat", "search fast"]


@pytest.fixture(scope="module")
def decoder_tokenizer():
    """A byte-level BPE tokenizer with an end-of-text token only (GPT-2's kind), markers added."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(TEXTS * 20, trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>"],
                                                            initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|endoftext|>")
    tok.add_tokens(["[Q] ", "[D] "])
    return tok


def pylate_row(tok, text, maxlen, marker, expand_with=None):
    """PyLate's input ids: the text truncated to maxlen - 1 tokens (on the tokenizer's side),
    padded to maxlen - 1 with the expansion token when given, the marker inserted at index 1."""
    ids = tok(text, add_special_tokens=True)["input_ids"]
    if len(ids) > maxlen - 1:
        ids = ids[len(ids) - (maxlen - 1):] if tok.truncation_side == "left" else ids[:maxlen - 1]
    if expand_with is not None:
        ids = ids + [expand_with] * (maxlen - 1 - len(ids))
    return ids[:1] + [tok.convert_tokens_to_ids(marker)] + ids[1:]


@pytest.mark.parametrize("side", ["right", "left"])
def test_a_tokenizer_without_a_leading_special_token_gets_pylates_inputs(decoder_tokenizer, side):
    tok = decoder_tokenizer
    tok.truncation_side = side
    try:
        cfg = EncoderConfig(dim=8, query_maxlen=8, doc_maxlen=6, query_prefix="[Q] ", document_prefix="[D] ",
                            query_augmentation=True, skiplist_words=())
        proc = TextProcessor(tok, cfg)
        assert proc.mask_id == tok.eos_token_id  # no [MASK]: queries expand with the end-of-text token
        for is_query, maxlen, marker in ((True, 8, "[Q] "), (False, 6, "[D] ")):
            rows = proc.rows(TEXTS, is_query)
            batch = proc.batch(rows.ids, is_query)
            for i, text in enumerate(TEXTS):
                want = pylate_row(tok, text, maxlen, marker, tok.eos_token_id if is_query else None)
                assert batch.input_ids[i, :len(want)].tolist() == want
                assert int(batch.output_mask[i].sum()) == len(want)
            assert rows.n_truncated == 2
    finally:
        tok.truncation_side = "right"


def test_windows_mask_their_context_where_the_marker_comes_second(decoder_tokenizer):
    cfg = EncoderConfig(dim=8, doc_maxlen=8, doc_windows=3, doc_window_overlap=2, document_prefix="[D] ",
                        skiplist_words=())
    proc = TextProcessor(decoder_tokenizer, cfg)
    rows = proc.rows(TEXTS[:1], False)
    assert len(rows.ids) > 1 and rows.context[1] == 2
    batch = proc.batch(rows.ids, False, context=rows.context)
    text_ids = decoder_tokenizer(TEXTS[0], add_special_tokens=False)["input_ids"]
    outputs = [batch.input_ids[r][batch.output_mask[r]].tolist() for r in range(len(rows.ids))]
    marker = decoder_tokenizer.convert_tokens_to_ids("[D] ")
    # every text token is output once over the windows, each window's marker too
    assert [t for out in outputs for t in out if t != marker] == text_ids[:sum(len(o) - 1 for o in outputs)]
    assert all(out.count(marker) == 1 for out in outputs)
    assert all(int(batch.input_ids[r, 1]) == marker for r in range(len(rows.ids)))  # second, as PyLate puts it
