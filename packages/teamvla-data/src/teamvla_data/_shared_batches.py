"""Hand batches from DataLoader workers to the main process through reusable shared memory.

Why: for every tensor a worker returns, torch creates a new shared-memory
segment, copies the tensor into it and passes its file descriptor to the main
process over a socket. For batches of several MB of images, creating and
page-faulting fresh segments and the descriptor round trips cost more than
building the batch. Instead:

* the main process allocates, once, a few shared-memory *slots* per worker,
  each big enough for one packed batch; workers inherit them when they start;
* a worker packs its numpy batch into a free slot of its own (one memcpy per
  array) and sends only ``(worker, slot, layout)`` through torch's queue;
* the main process copies the slot once into private memory, rebuilds the
  arrays as tensor views of that copy, and marks the slot free.

Slot states live in a shared int64 tensor, one entry per (worker, slot): ``0``
= free, otherwise the *iteration* (pass over the loader) whose batch it holds.
Every pass gets a new iteration number, carried to the workers inside the
sampler's index batches; a slot stamped with an older iteration is free,
because before a new pass delivers anything torch has dropped the undelivered
batches of the previous one. Without persistent workers every pass starts fresh
worker processes; they reuse the slots once the previous pass has ended (its
workers are shut down then), and get new slots and states while an earlier pass
is still open, so a straggler can never write into memory the current pass reads.

A batch that does not fit its slot (a transform made it larger than the probe
batch predicted) travels the ordinary torch way instead.

Memory: ``num_workers x slots_per_worker`` packed batches of shared memory
(e.g. 2 x 3 x 7 MiB for batch 64 of two 96x96 cameras with two frames).
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from teamvla_data._torch import require_torch
from teamvla_data.dataset import MultiTaskDataset

torch = require_torch("teamvla_data.make_dataloader")

SLOT_KEY = "__teamvla_slot__"
_ALIGN = 64

Layout = list[tuple[str, str, tuple[int, ...], int]]  # (key, dtype str, shape, byte offset)


def _aligned(nbytes: int) -> int:
    return -(-nbytes // _ALIGN) * _ALIGN


def packed_size(batch: Mapping[str, Any]) -> int:
    """Bytes a batch's arrays take when packed into a slot."""
    return sum(_aligned(v.nbytes) for v in batch.values() if isinstance(v, np.ndarray))


class SlotDataset(MultiTaskDataset):
    """The loader's view of a :class:`MultiTaskDataset`: same state, batches handed over through slots.

    Made by :meth:`wrap` (a shallow copy sharing the dataset's episodes, column
    store and transforms); in the main process it behaves exactly like the dataset.
    """

    num_workers: int
    slots_per_worker: int
    slot_bytes: int
    iteration: int
    control: Any
    slots: list[Any] | None
    open_passes: int
    _parent: int

    @classmethod
    def wrap(
        cls,
        dataset: MultiTaskDataset,
        num_workers: int,
        slots_per_worker: int,
        batch_size: int,
        probe: int = 0,
    ) -> SlotDataset:
        """Wrap ``dataset`` for ``num_workers`` workers; slots fit ``batch_size`` samples.

        Sample ``probe`` (one this rank reads) is loaded once to measure a packed sample.
        """
        obj = cls.__new__(cls)
        obj.__dict__.update(dataset.__dict__)
        obj.num_workers = num_workers
        obj.slots_per_worker = slots_per_worker
        # Every array has a leading batch axis, so one sample's packed size scales exactly
        # (plus alignment padding per array).
        sample = dataset.__getitems__([probe])
        n_arrays = sum(isinstance(v, np.ndarray) for v in sample.values())
        obj.slot_bytes = packed_size(sample) * batch_size + n_arrays * _ALIGN
        obj.iteration = 0
        obj.control = None
        obj.slots = None
        obj.open_passes = 0
        obj._parent = os.getpid()
        return obj

    # ------------------------------------------------------------------ main-process side

    def start_iteration(self, *, persistent_workers: bool) -> int:
        """Begin a pass over the loader; return its iteration number (stamped into its batches).

        Call it before the DataLoader starts the pass: workers started for it
        inherit the slots and states current at that moment.
        """
        self.iteration += 1
        if self.slots is None or (not persistent_workers and self.open_passes > 0):
            count = self.num_workers * self.slots_per_worker
            self.control = _shared_tensor(count * 8).view(torch.int64)
            self.control.zero_()
            self.slots = [_shared_tensor(self.slot_bytes) for _ in range(count)]
        self.open_passes += 1
        return self.iteration

    def end_iteration(self) -> None:
        """A pass ended (its non-persistent workers are shut down)."""
        self.open_passes -= 1

    def receive(self, raw: dict[str, Any], *, pin: bool = False) -> dict[str, Any]:
        """Turn what the DataLoader delivered into the batch: copy out of the slot and free it.

        With ``pin`` the copy goes straight into page-locked memory.
        """
        if SLOT_KEY not in raw:  # loaded in the main process, or too big for a slot
            out = {
                k: torch.from_numpy(v) if isinstance(v, np.ndarray) else v for k, v in raw.items()
            }
            if pin:
                out = {k: v.pin_memory() if torch.is_tensor(v) else v for k, v in out.items()}
            return out
        layout, index, used = raw.pop(SLOT_KEY)
        assert self.slots is not None and self.control is not None
        slot = self.slots[index]
        # One memcpy out of the slot. numpy's copy, not torch's: torch splits copies over its
        # intra-op threads, which costs far more than it gains when the cores are busy loading.
        if pin:
            private = torch.empty(used, dtype=torch.uint8, pin_memory=True)
            np.copyto(private.numpy(), slot[:used].numpy())
        else:
            private = torch.from_numpy(slot[:used].numpy().copy())
        # The copy is complete before the slot is marked free (the worker may refill it at once).
        self.control[index] = 0
        raw.update(tensors_from_layout(private, layout))
        return raw

    # ------------------------------------------------------------------ worker side

    def __getitems__(self, indices: Sequence[int] | np.ndarray) -> dict[str, Any]:
        batch = super().__getitems__(indices)
        info = torch.utils.data.get_worker_info()
        if info is None or self.slots is None:  # loading in the main process: nothing to hand over
            return batch
        # Stamps must be >= 1 (0 means free).
        return self._pack(batch, info.id, max(1, int(getattr(indices, "iteration", 1))))

    def _acquire(self, worker: int, iteration: int) -> int:
        states = self.control.numpy()
        first = worker * self.slots_per_worker
        delay = 1e-4
        last_check = time.monotonic()
        while True:
            for index in range(first, first + self.slots_per_worker):
                state = int(states[index])
                if state == 0 or state < iteration:
                    states[index] = iteration
                    return index
            # All slots hold batches the main process has not copied yet: wait (back-pressure).
            time.sleep(delay)
            delay = min(delay * 2, 5e-3)
            if time.monotonic() - last_check > 1.0:
                last_check = time.monotonic()
                if os.getppid() != self._parent:  # the main process died
                    raise SystemExit(1)

    def _pack(self, batch: Mapping[str, Any], worker: int, iteration: int) -> dict[str, Any]:
        assert self.slots is not None
        used = packed_size(batch)
        arrays = [v for v in batch.values() if isinstance(v, np.ndarray)]
        if used > self.slot_bytes or any(v.dtype.str not in _TORCH_DTYPES for v in arrays):
            return dict(batch)  # does not fit (or an unusual dtype): let torch send it
        index = self._acquire(worker, iteration)
        buf = self.slots[index].numpy()
        layout: Layout = []
        offset = 0
        for key, value in batch.items():
            if isinstance(value, np.ndarray):
                dest = buf[offset : offset + value.nbytes].view(value.dtype).reshape(value.shape)
                dest[...] = value
                layout.append((key, value.dtype.str, value.shape, offset))
                offset += _aligned(value.nbytes)
        out = {k: v for k, v in batch.items() if not isinstance(v, np.ndarray)}
        out[SLOT_KEY] = (layout, index, used)
        return out


def _shared_tensor(nbytes: int) -> Any:
    """A uint8 tensor in new shared memory, without the copy ``share_memory_()`` would make."""
    storage = torch.UntypedStorage._new_shared(max(nbytes, 1))
    return torch.empty(0, dtype=torch.uint8).set_(storage, 0, (max(nbytes, 1),))


def tensors_from_layout(private: Any, layout: Layout) -> dict[str, Any]:
    """Tensor views of ``private`` (a uint8 tensor) per the packing layout."""
    out = {}
    for key, dtype, shape, off in layout:
        dt = np.dtype(dtype)
        n = int(np.prod(shape, dtype=np.int64)) * dt.itemsize
        out[key] = private[off : off + n].view(_TORCH_DTYPES[dt.str]).view(shape)
    return out


_TORCH_DTYPES = {
    np.dtype(np.uint8).str: torch.uint8,
    np.dtype(np.bool_).str: torch.bool,
    np.dtype(np.float32).str: torch.float32,
    np.dtype(np.float64).str: torch.float64,
    np.dtype(np.int64).str: torch.int64,
    np.dtype(np.int32).str: torch.int32,
    np.dtype(np.int16).str: torch.int16,
    np.dtype(np.float16).str: torch.float16,
}
