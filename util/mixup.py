"""Cross-subject mixup for Task 2 batches (CAT-WaveNet training trick).

The batch is split into two halves of pairs; each pair (a, b) gets one
``lam ~ U(0, 1)`` and EEG and ALL targets are mixed with that same ``lam``::

    out[a] = lam * x[a] + (1 - lam) * x[b]
    out[b] = (1 - lam) * x[a] + lam * x[b]

so the batch size is kept. Pairs are drawn from DIFFERENT subjects whenever no
subject holds more than half of the batch: the batch is shuffled, grouped by
subject (subject order shuffled too) and position i is paired with position
i + B//2. With an odd batch size one example is left unmixed. ``times=2``
applies the procedure twice (each example then mixes up to 4 windows).
Non-mixed keys (``subject``, ``recording``) keep their values; the
``subject`` label of an example is the one of its dominant-at-position source.

``halving_mixup`` is the published CAT-WaveNet's variant (``../shared/reference/published_models.md``
1.7): the batch of B is split into its first and second halves, one ``lam ~ U(0, 1)`` per pair
(i, i + B//2), and the batch is REPLACED by ``lam * first + (1 - lam) * second``, so it halves on
every pass (24 windows -> 12 -> 6 with ``times=2``, each a mix of 4). The batch order is the
trainer's random permutation, so subjects are not steered apart. With an odd B the last example
is dropped; a batch of one passes through unmixed. Every other tensor with B rows (``subject``,
``recording``, ``index``) keeps the rows of the first half.
"""
from __future__ import annotations

import torch


def pair_indices(subjects: torch.Tensor, generator: torch.Generator | None = None) -> tuple:
    """``(a, b)`` index tensors of length B//2 pairing different subjects where possible."""
    subjects = torch.as_tensor(subjects).reshape(-1)
    n = subjects.numel()
    half = n // 2
    perm = torch.randperm(n, generator=generator)
    unique = torch.unique(subjects)
    subject_rank = torch.empty(int(unique.max().item()) + 1 if unique.numel() else 0, dtype=torch.long)
    subject_rank[unique.long()] = torch.randperm(unique.numel(), generator=generator)
    rank = subject_rank[subjects[perm].long()]
    order = perm[torch.sort(rank, stable=True).indices]  # grouped by (shuffled) subject, shuffled within
    return order[:half], order[half:2 * half]


def _mix_once(batch: dict, keys, generator):
    subjects = batch["subject"]
    subjects = torch.as_tensor(subjects)
    a, b = pair_indices(subjects, generator)
    lam = torch.rand(a.numel(), generator=generator)  # (pairs,)
    out = dict(batch)
    for key in keys:
        x = batch[key]
        shape = (-1,) + (1,) * (x.dim() - 1)
        lam_x = lam.to(x.dtype).reshape(shape)
        mixed = x.clone()
        mixed[a] = lam_x * x[a] + (1 - lam_x) * x[b]
        mixed[b] = (1 - lam_x) * x[a] + lam_x * x[b]
        out[key] = mixed
    return out, {"a": a, "b": b, "lam": lam}


def cross_subject_mixup(batch: dict, keys, times: int = 1, generator: torch.Generator | None = None,
                        return_info: bool = False):
    """Mix ``batch[key]`` for every key in ``keys`` (e.g. eeg and all targets) ``times`` times.

    ``batch["subject"]`` (B,) ints are required. Returns the new batch (a shallow copy),
    or ``(batch, infos)`` with one ``{"a", "b", "lam"}`` dict per application if ``return_info``.
    """
    if "subject" not in batch:
        raise KeyError("cross_subject_mixup needs batch['subject'] to pair different subjects")
    keys = tuple(keys)
    if not keys:
        raise ValueError("cross_subject_mixup: no keys to mix")
    if times < 0:
        raise ValueError(f"times must be >= 0, got {times}")
    infos = []
    for _ in range(times):
        batch, info = _mix_once(batch, keys, generator)
        infos.append(info)
    return (batch, infos) if return_info else batch


def _halve_once(batch: dict, keys, generator):
    n = int(torch.as_tensor(batch[keys[0]]).shape[0])
    half = n // 2
    if half == 0:
        return batch, None
    lam = torch.rand(half, generator=generator)  # (pairs,)
    out = {}
    for key, value in batch.items():
        if key in keys:
            shape = (-1,) + (1,) * (value.dim() - 1)
            lam_x = lam.to(value.device, value.dtype).reshape(shape)
            out[key] = lam_x * value[:half] + (1 - lam_x) * value[half:2 * half]
        elif torch.is_tensor(value) and value.dim() > 0 and value.shape[0] == n:
            out[key] = value[:half]
        else:
            out[key] = value
    return out, {"half": half, "lam": lam}


def halving_mixup(batch: dict, keys, times: int = 1, generator: torch.Generator | None = None,
                  return_info: bool = False):
    """The published mixup: ``batch[key]`` for every key in ``keys`` becomes ``lam * first half +
    (1 - lam) * second half`` (one ``lam`` per pair, shared by all keys), ``times`` times; the batch
    halves each time (module docstring). Returns the new batch, or ``(batch, infos)`` with one
    ``{"half", "lam"}`` dict per application that mixed (none for a batch of one) if ``return_info``.
    """
    keys = tuple(keys)
    if not keys:
        raise ValueError("halving_mixup: no keys to mix")
    if times < 0:
        raise ValueError(f"times must be >= 0, got {times}")
    sizes = {key: int(torch.as_tensor(batch[key]).shape[0]) for key in keys}
    if len(set(sizes.values())) != 1:
        raise ValueError(f"halving_mixup: the mixed keys have different batch sizes {sizes}")
    infos = []
    for _ in range(times):
        batch, info = _halve_once(batch, keys, generator)
        if info is not None:
            infos.append(info)
    return (batch, infos) if return_info else batch
