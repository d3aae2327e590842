"""Training samplers, split across processes, seedable and checkpointable: identity batches (P identities x K pairs)
or plain random batches."""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Iterator, Sequence


class EpochBatchSampler:
    """
    What the training samplers share: this process's place among `num_replicas`, an epoch's batch list for it
    (`_draw_epoch`, a pure function of the seed and the epoch, kept for the current epoch), and `state_dict` /
    `load_state_dict` (used by `Accelerator.register_for_checkpointing`) recording the epoch and how many batches of it
    were consumed, so a resumed run continues with the very next batch.
    """

    def __init__(self, num_replicas: int, rank: int, seed: int):
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank must be in [0, {num_replicas}), got {rank}")
        self.num_replicas = num_replicas
        self.rank = rank
        self.seed = seed
        self.epoch = 0
        self.batches_consumed = 0
        self._cache: tuple[int, list[list[tuple[int, int]]]] | None = None

    def _draw_epoch(self, epoch: int) -> list[list[tuple[int, int]]]:
        """This process's batches of `epoch`, drawn from the seed and the epoch alone."""
        raise NotImplementedError

    def _epoch_batches(self, epoch: int) -> list[list[tuple[int, int]]]:
        """`_draw_epoch`, kept for the epoch last asked for."""
        if self._cache is None or self._cache[0] != epoch:
            self._cache = (epoch, self._draw_epoch(epoch))
        return self._cache[1]

    def set_epoch(self, epoch: int) -> None:
        """Start `epoch` from its first batch, unless a restored state says part of it was already consumed."""
        if epoch != self.epoch:
            self.epoch = epoch
            self.batches_consumed = 0

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        yield from self._epoch_batches(self.epoch)[self.batches_consumed :]

    def __len__(self) -> int:
        """Batches left in the current epoch for this process."""
        return len(self._epoch_batches(self.epoch)) - self.batches_consumed

    def batches_per_epoch(self, epoch: int | None = None) -> int:
        return len(self._epoch_batches(self.epoch if epoch is None else epoch))

    def state_dict(self) -> dict:
        return {"seed": self.seed, "epoch": self.epoch, "batches_consumed": self.batches_consumed}

    def load_state_dict(self, state: dict) -> None:
        if state["seed"] != self.seed:
            raise ValueError(f"the checkpoint's sampler seed is {state['seed']}, this run's is {self.seed}")
        self.epoch = state["epoch"]
        self.batches_consumed = state["batches_consumed"]


class IdentityBatchSampler(EpochBatchSampler):
    """
    Yields, for one process, batches of `ids_per_batch` distinct identities with `pairs_per_id` pairs each, as lists
    of `(pair_index, item_seed)` keys (see `IVTTrainingDataset`).

    Each epoch (seeded by `seed` and the epoch number) every identity's pairs are shuffled and cut into chunks of K
    (an identity with fewer than K pairs is filled up by drawing its pairs again); batches then take one chunk from each
    of P identities drawn at random among those with chunks left, until fewer than P remain. The epoch's batch list
    is the same on every process; process r takes batches r, r + N, r + 2N, ... (cut to a multiple of N), so the
    processes see disjoint parts that together cover the epoch. `state_dict` / `load_state_dict` (used by
    `Accelerator.register_for_checkpointing`) record the epoch and how many batches of it were consumed, so a resumed
    run continues with the very next batch.
    """

    def __init__(
        self,
        person_ids: Sequence[int],
        ids_per_batch: int,
        pairs_per_id: int,
        num_replicas: int = 1,
        rank: int = 0,
        seed: int = 0,
    ):
        super().__init__(num_replicas, rank, seed)
        by_person = defaultdict(list)
        for index, person_id in enumerate(person_ids):
            by_person[int(person_id)].append(index)
        if len(by_person) < ids_per_batch:
            raise ValueError(
                f"the training split has {len(by_person)} identities, fewer than ids_per_batch={ids_per_batch}"
            )
        most_pairs = max((len(indices) for indices in by_person.values()), default=0)
        if pairs_per_id > most_pairs:
            raise ValueError(
                f"pairs_per_id={pairs_per_id} is more than any identity has (at most {most_pairs} pairs): every "
                f"identity's pairs would be drawn again to fill its chunk; use pairs_per_id <= {most_pairs}"
            )
        self.indices_by_person = dict(sorted(by_person.items()))
        self.ids_per_batch = ids_per_batch
        self.pairs_per_id = pairs_per_id
        if len(self) == 0:
            raise ValueError(
                f"not one batch per process: {len(by_person)} identities cannot fill {num_replicas} process(es) with "
                f"batches of {ids_per_batch} identities"
            )

    def _draw_epoch(self, epoch: int) -> list[list[tuple[int, int]]]:
        rng = random.Random(f"identity-sampler-{self.seed}-{epoch}")
        chunks = {}
        for person_id, indices in self.indices_by_person.items():
            indices = list(indices)
            if len(indices) < self.pairs_per_id:
                indices = rng.choices(indices, k=self.pairs_per_id)
            rng.shuffle(indices)
            usable = len(indices) - len(indices) % self.pairs_per_id
            chunks[person_id] = [
                indices[start : start + self.pairs_per_id] for start in range(0, usable, self.pairs_per_id)
            ]
        available = list(chunks)
        batches = []
        while len(available) >= self.ids_per_batch:
            chosen = rng.sample(available, self.ids_per_batch)
            batch = []
            for person_id in chosen:
                batch.extend((index, rng.getrandbits(63)) for index in chunks[person_id].pop())
                if not chunks[person_id]:
                    available.remove(person_id)
            batches.append(batch)
        per_process = len(batches) // self.num_replicas
        return batches[self.rank :: self.num_replicas][:per_process]


class RandomBatchSampler(EpochBatchSampler):
    """
    Batches of `batch_size` items drawn without replacement from a seeded shuffle of all items, one epoch after
    another (IRRA's plain random sampler), as `(item_index, item_seed)` keys with the interface of
    `IdentityBatchSampler`: process r takes batches r, r + N, ... of the epoch's list (cut to a multiple of N), and the
    last incomplete batch is dropped so that every process contributes a batch of the same size to a gathered loss.
    """

    def __init__(self, num_items: int, batch_size: int, num_replicas: int = 1, rank: int = 0, seed: int = 0):
        super().__init__(num_replicas, rank, seed)
        if batch_size < 2:
            raise ValueError(f"batch_size must be at least 2 (the losses need negatives), got {batch_size}")
        self.num_items = num_items
        self.batch_size = batch_size
        if len(self) == 0:
            raise ValueError(
                f"not one batch per process: {num_items} training pairs cannot fill {num_replicas} process(es) with "
                f"batches of {batch_size}"
            )

    def _draw_epoch(self, epoch: int) -> list[list[tuple[int, int]]]:
        rng = random.Random(f"random-sampler-{self.seed}-{epoch}")
        order = list(range(self.num_items))
        rng.shuffle(order)
        keys = [(index, rng.getrandbits(63)) for index in order]
        num_batches = len(keys) // self.batch_size // self.num_replicas * self.num_replicas
        batches = [keys[start * self.batch_size : (start + 1) * self.batch_size] for start in range(num_batches)]
        return batches[self.rank :: self.num_replicas]

