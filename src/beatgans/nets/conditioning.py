"""Condition encoders (tau_theta of latent diffusion): class labels or prompts -> a context sequence.

Every encoder is an ``nn.Module`` with this duck-typed interface, used by the diffusion module and
the samplers:

    kind: "labels" (conditions are (B,) int64 class ids) or "text" (a list of B prompts)
    context_dim: width D of the context tokens
    forward(cond) -> (context (B, S, D) float32, mask (B, S) bool, True = real token)
    null_condition(n) -> the unconditional condition for n samples (null label / empty prompt)
    drop(cond, mask (B,) bool) -> cond with the entries under ``mask`` replaced by the null condition

The null condition is what classifier-free guidance trains with probability ``p_uncond`` and uses
for the unconditional half at sampling time.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
from torch import nn

from beatgans.nets.transformer import CrossAttention, FeedForward
from beatgans.utils.logging import get_logger

log = get_logger(__name__)

_WORD = re.compile(r"[a-z0-9]+|[^\sa-z0-9]")


def split_words(text: str) -> list[str]:
    """Lower-case words and single punctuation marks: "Number seven, thick" -> [number, seven, ",", thick]."""
    return _WORD.findall(text.lower())


class WordTokenizer:
    """A word-level tokenizer whose vocabulary comes from a dataset's captions (built offline).

    Ids 0..3 are ``<pad>``, ``<unk>``, ``<bos>``, ``<eos>``; then the vocabulary words. A prompt
    becomes ``<bos> words <eos>`` padded with ``<pad>`` to ``max_length`` (longer prompts are cut,
    keeping ``<eos>``); the mask marks everything but padding.
    """

    SPECIALS = ("<pad>", "<unk>", "<bos>", "<eos>")
    PAD, UNK, BOS, EOS = range(4)

    def __init__(self, vocab: Sequence[str], max_length: int = 16):
        words = [w for w in vocab if w not in self.SPECIALS]
        if len(set(words)) != len(words):
            raise ValueError("the tokenizer vocabulary has repeated words.")
        if max_length < 2:
            raise ValueError(f"max_length must be at least 2 (<bos> and <eos>), got {max_length}.")
        self.itos = list(self.SPECIALS) + words
        self.stoi = {w: i for i, w in enumerate(self.itos)}
        self.max_length = int(max_length)

    @classmethod
    def from_texts(cls, texts: Iterable[str], max_length: int | None = None) -> WordTokenizer:
        """Vocabulary = the sorted distinct words of ``texts``; max_length = the longest text + 2 by default."""
        texts = list(texts)
        words = sorted({w for t in texts for w in split_words(t)})
        longest = max((len(split_words(t)) for t in texts), default=0)
        return cls(words, max_length or longest + 2)

    def __len__(self) -> int:
        return len(self.itos)

    def encode(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompts -> (ids (B, max_length) int64, mask (B, max_length) bool)."""
        ids = torch.full((len(texts), self.max_length), self.PAD, dtype=torch.int64)
        for row, text in enumerate(texts):
            toks = [self.stoi.get(w, self.UNK) for w in split_words(text)][: self.max_length - 2]
            seq = [self.BOS, *toks, self.EOS]
            ids[row, : len(seq)] = torch.tensor(seq)
        return ids, ids != self.PAD

    def decode(self, ids: torch.Tensor) -> list[str]:
        """(B, L) ids -> prompts: the words between <bos> and <eos>, joined by spaces."""
        out = []
        for row in ids.tolist():
            words = [self.itos[i] for i in row if i not in (self.PAD, self.BOS)]
            out.append(" ".join(words[: words.index("<eos>")] if "<eos>" in words else words))
        return out

    def state(self) -> dict:
        return {"vocab": self.itos[len(self.SPECIALS):], "max_length": self.max_length}


class ClassTokenEncoder(nn.Module):
    """Class labels as one learned context token each; row ``num_classes`` is the null token (CFG).

    Shapes: ``forward(y (B,) int64 in 0..num_classes) -> (context (B, 1, D), mask (B, 1) all True)``.
    """

    kind = "labels"

    def __init__(self, num_classes: int, context_dim: int):
        super().__init__()
        self.num_classes = int(num_classes)
        self.context_dim = int(context_dim)
        self.embedding = nn.Embedding(num_classes + 1, context_dim)

    def forward(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = y.to(self.embedding.weight.device)
        context = self.embedding(y)[:, None]
        return context, torch.ones(context.shape[:2], dtype=torch.bool, device=context.device)

    def null_condition(self, n: int) -> torch.Tensor:
        return torch.full((n,), self.num_classes, dtype=torch.int64)

    def drop(self, y: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return torch.where(mask.to(y.device), torch.full_like(y, self.num_classes), y)


class _TextConditions:
    """Prompt handling shared by the text encoders: the empty prompt is the null condition."""

    kind = "text"

    def null_condition(self, n: int) -> list[str]:
        return [""] * n

    def drop(self, prompts: Sequence[str], mask: torch.Tensor) -> list[str]:
        return ["" if m else p for p, m in zip(prompts, mask.tolist())]


class _EncoderLayer(nn.Module):
    """Pre-LN bidirectional transformer layer with a key padding mask: (B, L, D) -> (B, L, D)."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = CrossAttention(dim, None, heads, dim // heads)
        self.norm2 = nn.LayerNorm(dim)
        self.ff = FeedForward(dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x)
        x = x + self.attn(h, h, mask)
        return x + self.ff(self.norm2(x))


class TextTransformerEncoder(_TextConditions, nn.Module):
    """A small transformer text encoder trained jointly with the diffusion model (LDM's text-to-image).

    Token + learned position embeddings, ``depth`` pre-LN layers with a key padding mask, a final
    LayerNorm. The vocabulary travels in the state dict (``_extra_state``), so a checkpoint always
    reads prompts with the words it was trained on.

    Args:
        tokenizer: the `WordTokenizer` (its length sizes the embedding).
        context_dim: width D; heads must divide it.
    Shapes: ``forward(prompts: list of B str) -> (context (B, max_length, D), mask (B, max_length) bool)``.
    """

    def __init__(self, tokenizer: WordTokenizer, context_dim: int = 64, depth: int = 2, heads: int = 4):
        super().__init__()
        if context_dim % heads:
            raise ValueError(f"context_dim {context_dim} is not divisible by heads {heads}.")
        self.tokenizer = tokenizer
        self.context_dim = int(context_dim)
        self.token_embedding = nn.Embedding(len(tokenizer), context_dim)
        self.position_embedding = nn.Embedding(tokenizer.max_length, context_dim)
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.position_embedding.weight, std=0.01)
        self.layers = nn.ModuleList(_EncoderLayer(context_dim, heads) for _ in range(depth))
        self.final_norm = nn.LayerNorm(context_dim)

    def forward(self, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        ids, mask = self.tokenizer.encode(list(prompts))
        device = self.token_embedding.weight.device
        return self.encode_ids(ids.to(device), mask.to(device)), mask.to(device)

    def encode_ids(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, L) token ids + (B, L) bool mask -> (B, L, D) context; padded positions are never attended to."""
        x = self.token_embedding(ids) + self.position_embedding.weight[None, : ids.shape[1]]
        for layer in self.layers:
            x = layer(x, mask)
        return self.final_norm(x)

    def get_extra_state(self) -> dict:
        return self.tokenizer.state()

    def set_extra_state(self, state: dict) -> None:
        saved = WordTokenizer(state["vocab"], state["max_length"])
        if saved.itos != self.tokenizer.itos or saved.max_length != self.tokenizer.max_length:
            log.warning("the checkpoint's text vocabulary differs from the configured one; using the checkpoint's.")
        self.tokenizer = saved


class HFTextEncoder(_TextConditions, nn.Module):
    """A frozen Hugging Face text encoder (CLIP's in Stable Diffusion) as tau_theta; needs the ``text`` extra.

    As Stable Diffusion does, prompts are padded to ``max_length`` and the context is the last hidden
    state of every position (``use_mask=False``: padded positions carry the end-of-text state and
    are attended to); ``use_mask=True`` hides the padding instead.

    Args:
        model: e.g. ``transformers.CLIPTextModel``; tokenizer: its Hugging Face tokenizer.
    Shapes: ``forward(prompts) -> (context (B, max_length, hidden_size), mask (B, max_length) bool)``.
    """

    def __init__(self, model: nn.Module, tokenizer, max_length: int | None = None, use_mask: bool = False,
                 freeze: bool = True):
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.context_dim = int(model.config.hidden_size)
        self.max_length = int(max_length or getattr(model.config, "max_position_embeddings", 77))
        self.use_mask = use_mask
        if freeze:
            self.model.requires_grad_(False).eval()

    @classmethod
    def from_pretrained(cls, path: str, model_class: str = "CLIPTextModel", max_length: int | None = None,
                        use_mask: bool = False, freeze: bool = True) -> HFTextEncoder:
        """Load model and tokenizer from a local folder (never downloads), e.g. Stable Diffusion's text_encoder."""
        folder = Path(path).expanduser()
        if not folder.is_dir():
            raise FileNotFoundError(f"cond_encoder.path={path!r} is not a folder; point it at a local Hugging Face "
                                    "text encoder (config.json, weights and tokenizer files).")
        try:
            import transformers
        except ImportError:
            raise ImportError("the Hugging Face text encoder needs the 'text' extra: "
                              "pip install 'beatgans[text]'.") from None
        model = getattr(transformers, model_class).from_pretrained(folder, local_files_only=True)
        tokenizer = transformers.AutoTokenizer.from_pretrained(folder, local_files_only=True)
        return cls(model, tokenizer, max_length, use_mask, freeze)

    def forward(self, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        tok = self.tokenizer(list(prompts), padding="max_length", max_length=self.max_length, truncation=True,
                             return_tensors="pt")
        device = next(self.model.parameters()).device
        ids = tok["input_ids"].to(device)
        mask = tok["attention_mask"].to(device).bool()
        context = self.model(input_ids=ids, attention_mask=mask.long() if self.use_mask else None).last_hidden_state
        return context.float(), mask if self.use_mask else torch.ones_like(mask)


def is_frozen(module: nn.Module) -> bool:
    """True when no parameter of ``module`` is trained (a frozen pretrained encoder)."""
    return not any(p.requires_grad for p in module.parameters())


__all__ = [
    "ClassTokenEncoder",
    "HFTextEncoder",
    "TextTransformerEncoder",
    "WordTokenizer",
    "is_frozen",
    "split_words",
]
