"""Condition encoders (class tokens, the word-level text transformer, a local Hugging Face encoder) and captions."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from beatgans.data.captions import (
    HELDOUT_PHRASINGS,
    TRAIN_PHRASINGS,
    CaptionedDigitsDataModule,
    all_captions,
    digit_prompts,
    prompt_label,
)
from beatgans.nets.conditioning import ClassTokenEncoder, TextTransformerEncoder, WordTokenizer, split_words


def _tokenizer(max_length=8):
    return WordTokenizer.from_texts(["a handwritten seven", "the digit 7", "number seven, thick stroke"], max_length)


def test_tokenizer_vocabulary_round_trip_padding_and_unknown_words():
    tok = _tokenizer()
    assert tok.itos[:4] == ["<pad>", "<unk>", "<bos>", "<eos>"]
    assert tok.itos[4:] == sorted(set(tok.itos[4:]))  # from the data, sorted
    texts = ["Number seven, THICK stroke", "the digit 7", ""]
    ids, mask = tok.encode(texts)
    assert ids.shape == mask.shape == (3, 8) and ids.dtype == torch.int64
    assert tok.decode(ids) == [" ".join(split_words(t)) for t in texts]
    assert ids[2, :2].tolist() == [tok.BOS, tok.EOS] and mask.sum(1).tolist() == [7, 5, 2]
    assert (ids[~mask] == tok.PAD).all()
    assert tok.decode(tok.encode(["a purple seven"])[0]) == ["a <unk> seven"]
    long_ids, long_mask = tok.encode(["seven " * 20])
    assert long_mask.all() and long_ids[0, -1] == tok.EOS  # cut to max_length, <eos> kept


def test_class_token_encoder_has_a_null_token_and_drops_to_it():
    torch.manual_seed(0)
    enc = ClassTokenEncoder(10, 8)
    y = torch.tensor([3, 9, 0])
    context, mask = enc(y)
    assert context.shape == (3, 1, 8) and mask.all()
    assert torch.equal(context[:, 0], enc.embedding.weight[y])
    assert enc.null_condition(2).tolist() == [10, 10]
    assert enc.drop(y, torch.tensor([True, False, True])).tolist() == [10, 9, 10]
    assert not torch.equal(enc(enc.null_condition(1))[0][0], context[2])


def test_text_encoder_shapes_null_prompt_and_padding_invariance():
    torch.manual_seed(0)
    tok = _tokenizer(10)
    enc = TextTransformerEncoder(tok, context_dim=16, depth=2, heads=4)
    context, mask = enc(["a handwritten seven", ""])
    assert context.shape == (2, 10, 16) and mask.shape == (2, 10) and mask[1].sum() == 2
    assert enc.drop(["a", "b"], torch.tensor([False, True])) == ["a", ""] and enc.null_condition(1) == [""]
    ids, mask = tok.encode(["the digit 7"])
    junk = torch.where(mask, ids, torch.randint(4, len(tok), ids.shape))  # other words in the padded slots
    a, b = enc.encode_ids(ids, mask), enc.encode_ids(junk, mask)
    assert torch.allclose(a[mask], b[mask], atol=1e-6)
    assert not torch.allclose(enc.encode_ids(junk, torch.ones_like(mask))[mask], a[mask], atol=1e-4)


def test_text_encoder_checkpoint_carries_its_vocabulary():
    torch.manual_seed(0)
    enc = TextTransformerEncoder(_tokenizer(), context_dim=16, heads=4)
    same_size = WordTokenizer([f"w{i}" for i in range(len(enc.tokenizer) - 4)], 8)
    other = TextTransformerEncoder(same_size, context_dim=16, heads=4)
    other.load_state_dict(enc.state_dict())
    assert other.tokenizer.itos == enc.tokenizer.itos
    assert torch.equal(other(["a handwritten seven"])[0], enc(["a handwritten seven"])[0])


def test_captions_hold_out_phrasings_with_known_words():
    assert not set(TRAIN_PHRASINGS) & set(HELDOUT_PHRASINGS)
    train_words = {w for c in all_captions(TRAIN_PHRASINGS) for w in split_words(c)}
    # held out: phrasing, not words
    assert {w for c in all_captions(HELDOUT_PHRASINGS) for w in split_words(c)} <= train_words
    assert not set(all_captions(HELDOUT_PHRASINGS)) & set(all_captions(TRAIN_PHRASINGS))
    prompts = digit_prompts()
    assert [prompt_label(p) for p in prompts] == [k for k in range(10) for _ in HELDOUT_PHRASINGS]
    assert prompt_label("a handwritten seven") == 7 and prompt_label("the digit 7") == 7
    assert prompt_label("a cat") is None and prompt_label("one or two") is None


def test_captioned_digits_batches_are_images_and_captions():
    dm = CaptionedDigitsDataModule(image_size=8, batch_size=16, seed=0)
    torch.manual_seed(0)
    x, captions = next(iter(dm.train_dataloader()))
    assert x.shape == (16, 1, 8, 8) and len(captions) == 16 and all(isinstance(c, str) for c in captions)
    assert all(prompt_label(c) is not None for c in captions)
    data = dm._train.dataset
    strokes = data.strokes
    for k in range(10):  # every class is captioned in every phrasing
        assert set(np.asarray(data.choice)[data.labels.numpy() == k]) == set(range(len(TRAIN_PHRASINGS)))
    assert 0.4 < strokes.count("thick") / len(strokes) < 0.6  # above / below each class's median ink
    with pytest.raises(ValueError, match="num_classes=null"):
        CaptionedDigitsDataModule(num_classes=10)


def _tiny_clip(folder, hidden=32, positions=16):
    transformers = pytest.importorskip("transformers")
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in "abcdefghijklmnopqrstuvwxyz0123456789,":
        vocab.setdefault(c, len(vocab))
        vocab.setdefault(c + "</w>", len(vocab))
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    tok = transformers.CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"))
    config = transformers.CLIPTextConfig(vocab_size=len(vocab), hidden_size=hidden, intermediate_size=64,
                                         num_hidden_layers=2, num_attention_heads=4,
                                         max_position_embeddings=positions, bos_token_id=0, eos_token_id=1,
                                         pad_token_id=1)
    torch.manual_seed(0)
    model = transformers.CLIPTextModel(config)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return model


def test_hugging_face_text_encoder_from_a_local_folder(tmp_path):
    from beatgans.nets.conditioning import HFTextEncoder

    model = _tiny_clip(tmp_path)
    enc = HFTextEncoder.from_pretrained(str(tmp_path))
    assert enc.context_dim == 32 and enc.max_length == 16 and not any(p.requires_grad for p in enc.parameters())
    context, mask = enc(["a seven", ""])
    assert context.shape == (2, 16, 32) and mask.all()  # Stable Diffusion's way: every position attended to
    ids = enc.tokenizer(["a seven"], padding="max_length", max_length=16, return_tensors="pt")["input_ids"]
    assert torch.allclose(context[:1], model(input_ids=ids).last_hidden_state, atol=1e-6)
    masked = HFTextEncoder.from_pretrained(str(tmp_path), use_mask=True)
    assert masked(["a seven", ""])[1].sum(1).tolist() == [len(ids[0][ids[0] != 1]) + 1, 2]


def test_hugging_face_text_encoder_missing_folder_is_one_sentence(tmp_path):
    from beatgans.nets.conditioning import HFTextEncoder

    with pytest.raises(FileNotFoundError, match="is not a folder; point it at a local Hugging Face text encoder"):
        HFTextEncoder.from_pretrained(str(tmp_path / "nowhere"))
