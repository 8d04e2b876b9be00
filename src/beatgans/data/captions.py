"""Captions for the bundled digits: several phrasings per class, some held out of training.

Each image gets a caption drawn from the training phrasings ("a handwritten seven", "the digit 7",
"number seven, thick stroke", ...). The stroke word says whether the image has more ink than the
median image of its class, so it is a real property of the picture. The held-out phrasings are new
arrangements of words that all occur in training, so a text-conditioned model can be asked prompts
it never saw without meeting unknown words.
"""

from __future__ import annotations

import re

import torch
from torch.utils.data import Dataset

from beatgans.data.datamodules import DigitsDataModule
from beatgans.data.digits import load_digits

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")

# {word}: the digit's name, {n}: its numeral, {stroke}: "thick" or "thin".
TRAIN_PHRASINGS = (
    "a handwritten {word}",
    "the digit {n}",
    "number {word}, {stroke} stroke",
    "a {stroke} {n}",
    "the number {word}",
    "digit {n} written by hand",
    "a {word} with a {stroke} stroke",
    "{word}",
)
HELDOUT_PHRASINGS = (
    "the handwritten digit {word}",
    "number {n}, {stroke} stroke",
    "a {stroke} handwritten {word}",
)


def caption(label: int, phrasing: str, stroke: str = "thick") -> str:
    """The caption of digit ``label`` (0..9) in ``phrasing`` with the given stroke word."""
    return phrasing.format(word=DIGIT_WORDS[label], n=label, stroke=stroke)


def all_captions(phrasings=TRAIN_PHRASINGS) -> list[str]:
    """Every caption the phrasings produce (all digits, both strokes): the text a tokenizer is built from."""
    return sorted({caption(k, p, s) for k in range(10) for p in phrasings for s in ("thick", "thin")})


def digit_prompts(phrasings=HELDOUT_PHRASINGS, stroke: str = "thick") -> list[str]:
    """One prompt per digit and phrasing, digit-major: [p0(0), p1(0), ..., p0(1), ...]."""
    return [caption(k, p, stroke) for k in range(10) for p in phrasings]


_NUMBER = re.compile(r"\b(\d)\b")


def prompt_label(prompt: str) -> int | None:
    """The digit a prompt names (by word or numeral), or None when it names none or several."""
    text = prompt.lower()
    found = {DIGIT_WORDS.index(w) for w in re.findall(r"[a-z]+", text) if w in DIGIT_WORDS}
    found |= {int(d) for d in _NUMBER.findall(text)}
    return found.pop() if len(found) == 1 else None


def stroke_words(images: torch.Tensor, labels: torch.Tensor) -> list[str]:
    """"thick" for images with more ink than their class's median image, else "thin".

    Args: images (N, 1, H, W) in [-1, 1]; labels (N,) int64.
    """
    ink = ((images + 1) / 2).flatten(1).mean(1)
    median = {int(k): ink[labels == k].median() for k in labels.unique()}
    return ["thick" if ink[i] > median[int(labels[i])] else "thin" for i in range(len(labels))]


class CaptionedDigits(Dataset):
    """(image (1, S, S) in [-1, 1], caption str); image i keeps one phrasing, drawn once from ``seed``.

    A fixed phrasing per image (each phrasing still covers ~1/len(phrasings) of every class) keeps the
    batches a pure function of the sampler's indices, so a resumed run sees exactly the captions an
    uninterrupted one would (a draw per access would depend on when the global RNG is restored).
    """

    def __init__(self, image_size: int = 16, phrasings=TRAIN_PHRASINGS, seed: int = 0):
        self.images, self.labels = load_digits(image_size)
        self.strokes = stroke_words(self.images, self.labels)
        self.phrasings = tuple(phrasings)
        self.choice = torch.randint(len(self.phrasings), (len(self.labels),),
                                    generator=torch.Generator().manual_seed(seed)).tolist()

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, str]:
        return self.images[i], caption(int(self.labels[i]), self.phrasings[self.choice[i]], self.strokes[i])


class CaptionedDigitsDataModule(DigitsDataModule):
    """The digits with captions: batches are (images (B, 1, S, S) in [-1, 1], list of B captions).

    Args:
        phrasings: "train" (default) or "heldout" (for evaluation); `num_classes` stays None, the
            condition is the caption.
    """

    condition_kind = "text"  # batches carry captions, not labels

    def __init__(self, phrasings: str = "train", num_classes: None = None, **kwargs):
        if num_classes is not None:
            raise ValueError("captioned digits are conditioned on captions: set data.num_classes=null.")
        if phrasings not in ("train", "heldout"):
            raise ValueError(f"data.phrasings must be 'train' or 'heldout', got {phrasings!r}.")
        super().__init__(num_classes=None, **kwargs)
        self.phrasings = TRAIN_PHRASINGS if phrasings == "train" else HELDOUT_PHRASINGS

    def build(self) -> Dataset:
        return CaptionedDigits(self.image_size, self.phrasings, self.seed)


__all__ = [
    "DIGIT_WORDS",
    "HELDOUT_PHRASINGS",
    "TRAIN_PHRASINGS",
    "CaptionedDigits",
    "CaptionedDigitsDataModule",
    "all_captions",
    "caption",
    "digit_prompts",
    "prompt_label",
    "stroke_words",
]
