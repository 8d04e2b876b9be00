"""LightningDataModules for every data source. Batches are `(x, y)`: images (B, C, H, W) float32 in
[-1, 1] (or points (B, 2) for toy2d) and labels (B,) int64 (-1 when the data has none)."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
from torch.utils.data import (
    DataLoader,
    Dataset,
    DistributedSampler,
    Subset,
    TensorDataset,
)

from beatgans.data.digits import NUM_CLASSES as DIGIT_CLASSES
from beatgans.data.digits import load_digits
from beatgans.data.image_folder import DataError, ImageFolderDataset, has_class_subfolders, list_images
from beatgans.data.superres import SuperResDataset, check_low_res_size
from beatgans.data.toy2d import make_toy2d
from beatgans.utils.logging import get_logger
from beatgans.utils.rng import rng_state, set_rng_state

log = get_logger(__name__)


class FlipDataset(Dataset):
    """Random horizontal flip (p = 0.5) on top of an (x, y) dataset of images."""

    def __init__(self, base: Dataset):
        self.base = base

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i):
        x, y = self.base[i]
        return (x.flip(-1), y) if torch.rand(()) < 0.5 else (x, y)


class ResumableSampler(DistributedSampler):
    """DistributedSampler (seeded, reshuffled by `set_epoch`) whose next iteration can start `skip` indices into
    the epoch; `ResumableDataLoader` sets `skip` when a run resumes mid-epoch."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.skip = 0

    def __iter__(self):
        indices = list(super().__iter__())
        skip, self.skip = self.skip, 0
        return iter(indices[skip:])


def _world_size() -> int:
    import torch.distributed as dist

    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


class ResumableDataLoader(DataLoader):
    """A DataLoader over a `ResumableSampler` that follows Lightning's resumable-loader protocol
    (`state_dict` / `load_state_dict`, saved in every checkpoint), so a run resumed from a checkpoint written at
    any step sees exactly the batches, and the random numbers, an uninterrupted run would have seen.

    The state is the sampler's epoch, the batches already handed out in that epoch, and the global RNG state
    (Python, numpy, torch) at the time of the checkpoint. Batches are counted as they are handed to the
    consumer, not as workers prefetch them. On resume the RNG state is restored after the epoch's iterator is
    created (which draws a worker seed from the global RNG, as the uninterrupted run did at the start of the
    epoch) and before the next batch is fetched (random flips draw from it), i.e. at the same point of the
    random stream as in the uninterrupted run.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if not isinstance(self.sampler, ResumableSampler):
            raise TypeError("ResumableDataLoader needs a ResumableSampler.")
        self._epoch_batches = 0
        self._resume: dict | None = None

    def state_dict(self) -> dict:
        """Called on every rank while a checkpoint is dumped (Lightning requires `save_checkpoint` on all ranks),
        so under DDP the ranks' RNG states are gathered and each rank resumes its own (`rng_per_rank`)."""
        state = {"epoch": int(self.sampler.epoch), "batches": self._epoch_batches, "rng": rng_state()}
        if _world_size() > 1:
            import torch.distributed as dist

            per_rank = [None] * dist.get_world_size()
            dist.all_gather_object(per_rank, state["rng"])
            state["rng_per_rank"] = per_rank
        return state

    def load_state_dict(self, state: dict) -> None:
        self._resume = dict(state)
        per_rank = state.get("rng_per_rank")
        if per_rank is not None:
            import torch.distributed as dist

            rank = dist.get_rank() if _world_size() > 1 else 0
            if len(per_rank) != max(_world_size(), 1):
                log.warning("The checkpoint's RNG states come from %d processes but this run has %d: every rank "
                            "resumes with rank %d's state, so the random stream differs from the saved run's.",
                            len(per_rank), _world_size(), min(rank, len(per_rank) - 1))
            self._resume["rng"] = per_rank[min(rank, len(per_rank) - 1)]
        self.sampler.set_epoch(state["epoch"])  # workers may read the sampler before Lightning sets the epoch

    def __iter__(self):
        resume, self._resume = self._resume, None
        start = 0
        if resume is not None and resume["epoch"] == self.sampler.epoch:
            start = resume["batches"]  # Lightning starts a new epoch itself when the saved one was complete
        self.sampler.skip = start * self.batch_size
        self._epoch_batches = start
        iterator = super().__iter__()
        if resume is not None:
            set_rng_state(resume["rng"])
        for batch in iterator:
            self._epoch_batches += 1
            yield batch


class BaseDataModule(L.LightningDataModule):
    """Shared loaders: a seeded, epoch-reshuffled, rank-sharded training loader that resumes exactly
    (`ResumableDataLoader`) and a fixed validation split taken out of the training data. `low_res_size` turns
    the batches into super-resolution triples (x, y, low_res), see `beatgans.data.superres`."""

    image_size: int | None = None
    channels: int = 3
    num_classes: int | None = None

    def __init__(self, batch_size: int | None = 64, num_workers: int = 0, val_fraction: float = 0.05, seed: int = 0,
                 random_flip: bool = False, drop_last: bool = True, pin_memory: bool = False,
                 global_batch_size: int | None = None, micro_batch_size: int | None = None,
                 low_res_size: int | None = None):
        super().__init__()
        self.low_res_size = low_res_size
        # batch_size is per process; the train CLI derives it from global/micro (data/batching.py), which
        # are kept only as a record. Unsplit (one process, outside the train CLI) the global batch is used.
        self.batch_size = batch_size if batch_size is not None else (micro_batch_size or global_batch_size or 64)
        self.global_batch_size, self.micro_batch_size = global_batch_size, micro_batch_size
        self.num_workers = num_workers
        self.val_fraction = val_fraction
        self.seed = seed
        self.random_flip = random_flip
        self.drop_last = drop_last
        self.pin_memory = pin_memory
        self._train: Dataset | None = None
        self._val: Dataset | None = None

    def build(self) -> Dataset:
        """Return the whole (x, y) dataset; subclasses implement."""
        raise NotImplementedError

    def setup(self, stage: str | None = None) -> None:
        if self._train is not None:
            return
        full = self.build()
        n_val = int(round(len(full) * self.val_fraction))
        perm = torch.randperm(len(full), generator=torch.Generator().manual_seed(self.seed)).tolist()
        train = Subset(full, perm[n_val:]) if n_val else full
        self._val = Subset(full, perm[:n_val]) if n_val else None
        self._train = FlipDataset(train) if self.random_flip else train
        if self.low_res_size is not None:  # pairs made after the flip, so both halves show the same image
            check_low_res_size(self.low_res_size, self.image_size)
            self._train = SuperResDataset(self._train, self.low_res_size)
            self._val = SuperResDataset(self._val, self.low_res_size) if self._val is not None else None

    def _world(self) -> tuple[int, int]:
        trainer = getattr(self, "trainer", None)
        if trainer is None:
            return 1, 0
        return trainer.world_size, trainer.global_rank

    def train_dataloader(self) -> DataLoader:
        self.setup()
        world, rank = self._world()
        if self.batch_size > len(self._train) // world and self.drop_last:
            raise DataError(f"batch_size {self.batch_size} is larger than the {len(self._train) // world} "
                            "training examples per process; lower data.batch_size.")
        sampler = ResumableSampler(self._train, num_replicas=world, rank=rank, shuffle=True, seed=self.seed,
                                   drop_last=True)
        return ResumableDataLoader(self._train, batch_size=self.batch_size, sampler=sampler, drop_last=self.drop_last,
                          num_workers=self.num_workers, pin_memory=self.pin_memory,
                          persistent_workers=self.num_workers > 0)

    def val_dataloader(self) -> DataLoader | list:
        self.setup()
        if self._val is None:
            return []
        return DataLoader(self._val, batch_size=self.batch_size, shuffle=False, num_workers=self.num_workers)


def check_meta(name: str, channels: int, expected_channels: int, num_classes: int | None,
               available_classes: int | None) -> None:
    """The config's `channels` / `num_classes` (used to size the network) must match the data."""
    if channels != expected_channels:
        raise DataError(f"{name} has {expected_channels} channel(s) but data.channels={channels}.")
    if num_classes is not None and num_classes != available_classes:
        raise DataError(f"{name} has {available_classes or 'no'} classes but data.num_classes={num_classes} "
                        "(use null for an unconditional model).")


class DigitsDataModule(BaseDataModule):
    """scikit-learn's bundled digits (1,797 images, 10 classes), resized to `image_size`, one channel.
    `num_classes=None` trains unconditionally (labels are still in the batches)."""

    def __init__(self, image_size: int = 16, channels: int = 1, num_classes: int | None = DIGIT_CLASSES, **kwargs):
        super().__init__(**kwargs)
        check_meta("digits", channels, 1, num_classes, DIGIT_CLASSES)
        self.image_size, self.channels, self.num_classes = image_size, channels, num_classes

    def build(self) -> Dataset:
        x, y = load_digits(self.image_size)
        return TensorDataset(x, y)


class Toy2DDataModule(BaseDataModule):
    """A fixed sample of a 2-D toy distribution; batches are (points (B, 2), labels -1).

    ``params`` go to the distribution's sampler, e.g. ``{std: 0.0177, spacing: 0.707, balanced: true}``
    for `sample_gaussian_grid`.
    """

    channels = 2

    def __init__(self, name: str = "gaussian_grid", num_points: int = 20000, num_classes: None = None,
                 image_size: None = None, channels: int = 2, params: dict | None = None, **kwargs):
        kwargs.setdefault("val_fraction", 0.0)
        super().__init__(**kwargs)
        if num_classes is not None:
            raise DataError("toy2d data has no class labels; set data.num_classes=null.")
        if image_size is not None or channels != 2:
            raise DataError("toy2d data are 2-D points: set data.image_size=null and data.channels=2.")
        self.name = name
        self.num_points = num_points
        self.params = dict(params or {})

    def build(self) -> Dataset:
        pts = make_toy2d(self.name, self.num_points, seed=self.seed, **self.params)
        return TensorDataset(pts, torch.full((len(pts),), -1, dtype=torch.int64))


class TorchvisionDataModule(BaseDataModule):
    """CIFAR-10 / MNIST through torchvision, downloaded when a network is available."""

    _SPECS = {
        "cifar10": ("CIFAR10", 32, 3, 10, "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"),
        "mnist": ("MNIST", 28, 1, 10, "the four MNIST *-ubyte.gz files into <root>/MNIST/raw"),
    }

    def __init__(self, name: str = "cifar10", root: str = "data", download: bool = True,
                 image_size: int | None = None, channels: int | None = None, num_classes: int | None = 10,
                 train: bool = True, **kwargs):
        super().__init__(**kwargs)
        if name not in self._SPECS:
            raise ValueError(f"torchvision data: unknown dataset {name!r}; choose one of {sorted(self._SPECS)}.")
        self.name, self.root, self.download, self.split_train = name, root, download, train
        _, native, native_channels, classes, _ = self._SPECS[name]
        check_meta(name, channels or native_channels, native_channels, num_classes, classes)
        self.channels = native_channels
        self.image_size = image_size or native
        self.num_classes = num_classes

    def build(self) -> Dataset:
        import torchvision
        from torchvision import transforms as T

        cls_name, native, _, _, source = self._SPECS[self.name]
        tfm = [T.ToTensor(), T.Normalize([0.5] * self.channels, [0.5] * self.channels)]
        if self.image_size != native:
            tfm.insert(0, T.Resize(self.image_size))
        try:
            return getattr(torchvision.datasets, cls_name)(self.root, train=self.split_train,
                                                           download=self.download, transform=T.Compose(tfm))
        except Exception as err:  # offline download failure or missing files: one sentence on what to supply
            raise DataError(f"{cls_name} is not available under {Path(self.root).resolve()} and could not be "
                            f"downloaded ({type(err).__name__}); supply it by placing {source} there "
                            "(or set data.root to where it already is).") from None


class ImageFolderDataModule(BaseDataModule):
    """An image tree (see `ImageFolderDataset`); `labels` = "folder", "prefix" or null (unconditional)."""

    def __init__(self, root: str, image_size: int = 64, channels: int = 3, labels: str | None = "folder",
                 num_classes: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.root, self.labels = root, labels
        self.image_size, self.channels = image_size, channels
        # Validate eagerly so configuration errors surface before any training starts. Classes are inferred
        # from the sub-folders (or prefixes); a flat folder with labels=folder and no num_classes is unconditional.
        files = list_images(root)
        if labels == "folder" and num_classes is None and not has_class_subfolders(files, root):
            labels = None
        self._dataset = ImageFolderDataset(root, image_size, channels, labels, random_flip=False)
        if num_classes is not None and self._dataset.num_classes != num_classes:
            raise DataError(f"Image folder {root} has {self._dataset.num_classes or 'no'} classes "
                            f"{self._dataset.classes[:5]} but data.num_classes={num_classes}; set "
                            f"data.num_classes={self._dataset.num_classes or 'null'}.")
        self.num_classes = self._dataset.num_classes
        self.classes = list(self._dataset.classes)

    def build(self) -> Dataset:
        return self._dataset


def require_labels(datamodule: BaseDataModule, what: str) -> None:
    """Raise a clear error when `what` (e.g. "a class-conditional model") needs labels the data lacks."""
    if datamodule.num_classes is None:
        raise DataError(f"{what} needs class labels, but data {type(datamodule).__name__} is unconditional "
                        "(set data.class_cond=true or use a labelled dataset).")


__all__ = [
    "BaseDataModule",
    "DataError",
    "DigitsDataModule",
    "ImageFolderDataModule",
    "ResumableDataLoader",
    "ResumableSampler",
    "TorchvisionDataModule",
    "Toy2DDataModule",
    "require_labels",
]
