"""Shared fixtures: tiny random BERT checkpoints in several formats, data locations."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

SHARED_BEIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "beir"

VOCAB = ["[PAD]", "[unused0]", "[unused1]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", ",", "!", "?", "-",
         "the", "cat", "sat", "on", "mat", "a", "dog", "barked", "what", "is", "late", "interaction",
         "query", "document", "token", "every", "with", "compares", "##s", "##ing", "search", "fast"]


def make_tiny_bert(folder: Path, extra_tokens: list[str] | None = None):
    """A 2-layer random BERT with a WordPiece tokenizer saved in HF format; returns (model, tok)."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    (folder / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "BertTokenizer", "do_lower_case": True}))
    tok = AutoTokenizer.from_pretrained(str(folder))
    if extra_tokens:
        tok.add_tokens(extra_tokens)
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=128)
    model = BertModel(cfg).eval()
    tok.save_pretrained(str(folder))
    return model, tok


def write_pylate_modules(folder: Path):
    """PyLate's files beside a saved 32-wide backbone: modules.json, [Q]/[D] prefixes, query
    length 12 with [MASK] expansion, a punctuation skiplist and Dense(32->16); returns its weight."""
    import torch
    from safetensors.torch import save_file

    (folder / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Dense", "type": "pylate.models.Dense.Dense"},
    ]))
    (folder / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 40, "do_lower_case": False}))
    (folder / "config_sentence_transformers.json").write_text(json.dumps({
        "query_prefix": "[Q] ", "document_prefix": "[D] ", "query_length": 12, "document_length": 40,
        "attend_to_expansion_tokens": False, "skiplist_words": [".", ",", "!", "?"], "do_query_expansion": True,
    }))
    dense = folder / "1_Dense"
    dense.mkdir()
    (dense / "config.json").write_text(json.dumps({"in_features": 32, "out_features": 16, "bias": False,
                                                  "activation_function": "torch.nn.modules.linear.Identity"}))
    torch.manual_seed(1)
    weight = torch.randn(16, 32)
    save_file({"linear.weight": weight}, str(dense / "model.safetensors"))
    return weight


@pytest.fixture
def pylate_folder(tmp_path):
    """A PyLate-format model folder: Transformer + Dense(32->16), [Q]/[D] prefixes."""
    folder = tmp_path / "pylate"
    model, tok = make_tiny_bert(folder, extra_tokens=["[Q] ", "[D] "])
    model.save_pretrained(str(folder), safe_serialization=True)
    weight = write_pylate_modules(folder)
    return folder, weight


@pytest.fixture
def colbert_folder(tmp_path):
    """A Stanford ColBERT checkpoint: bert.* weights + linear.weight, artifact.metadata."""
    import torch
    from safetensors.torch import save_file

    folder = tmp_path / "colbert"
    model, tok = make_tiny_bert(folder)
    model.config.save_pretrained(str(folder))
    torch.manual_seed(2)
    weight = torch.randn(8, 32)
    state = {f"bert.{k}": v.contiguous() for k, v in model.state_dict().items()}
    state["linear.weight"] = weight
    save_file(state, str(folder / "model.safetensors"))
    (folder / "artifact.metadata").write_text(json.dumps({
        "query_maxlen": 10, "doc_maxlen": 30, "dim": 8, "attend_to_mask_tokens": False, "mask_punctuation": True,
        "query_token_id": "[unused0]", "doc_token_id": "[unused1]",
    }))
    return folder, weight, model, tok


@pytest.fixture
def modernbert_pylate_folder(tmp_path):
    """A PyLate-format model over a non-BERT backbone: tiny ModernBERT with a byte-level BPE
    tokenizer (as GTE-ModernColBERT), [Q]/[D] added tokens, Dense(32->16)."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import ModernBertConfig, ModernBertModel, PreTrainedTokenizerFast

    folder = tmp_path / "modernbert"
    folder.mkdir()
    bpe = Tokenizer(models.BPE(unk_token="[UNK]"))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator([" ".join(VOCAB[7:])] * 10, trainer)
    bpe.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", bpe.token_to_id("[CLS]")), ("[SEP]", bpe.token_to_id("[SEP]"))])
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]",
                                  pad_token="[PAD]", mask_token="[MASK]")
    tok.add_tokens(["[Q] ", "[D] "])
    tok.save_pretrained(str(folder))
    torch.manual_seed(0)
    cfg = ModernBertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                           intermediate_size=64, max_position_embeddings=128, pad_token_id=tok.pad_token_id,
                           cls_token_id=tok.cls_token_id, sep_token_id=tok.sep_token_id,
                           bos_token_id=tok.cls_token_id, eos_token_id=tok.sep_token_id)
    model = ModernBertModel(cfg).eval()
    model.save_pretrained(str(folder), safe_serialization=True)
    weight = write_pylate_modules(folder)
    return folder, weight, model, tok
