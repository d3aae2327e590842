"""The identity sampler: P x K batches, disjoint shards across processes, seeds, and exact continuation."""

from collections import Counter

import pytest

from training.sampler import IdentityBatchSampler

# 30 identities with 3 to 9 pairs each, in a shuffled order, with non-contiguous ids.
PERSON_IDS = [pid * 7 + 100 for pid in range(30) for _ in range(3 + pid % 7)]
PERSON_IDS = PERSON_IDS[1::2] + PERSON_IDS[::2]


def epoch_batches(sampler, epoch):
    sampler.set_epoch(epoch)
    return list(sampler)


def test_batches_hold_p_distinct_identities_with_k_pairs_each():
    sampler = IdentityBatchSampler(PERSON_IDS, ids_per_batch=5, pairs_per_id=4, seed=3)
    batches = epoch_batches(sampler, 0)
    assert len(batches) == len(sampler) == sampler.batches_per_epoch() > 5
    for batch in batches:
        counts = Counter(PERSON_IDS[index] for index, _ in batch)
        assert len(counts) == 5 and set(counts.values()) == {4}
    used = [index for batch in batches for index, _ in batch if PERSON_IDS.count(PERSON_IDS[index]) >= 4]
    assert len(used) == len(set(used)), "a pair of an identity with at least K pairs was drawn twice"


def test_identities_with_fewer_than_k_pairs_are_filled_up():
    person_ids = [1, 2, 2, 3, 3, 3]
    sampler = IdentityBatchSampler(person_ids, ids_per_batch=3, pairs_per_id=3, seed=0)
    (batch,) = epoch_batches(sampler, 0)
    counts = Counter(person_ids[index] for index, _ in batch)
    assert counts == {1: 3, 2: 3, 3: 3}


def test_processes_see_disjoint_shards_that_cover_the_epoch():
    single = epoch_batches(IdentityBatchSampler(PERSON_IDS, 5, 3, seed=11), 2)
    shards = [
        epoch_batches(IdentityBatchSampler(PERSON_IDS, 5, 3, num_replicas=3, rank=rank, seed=11), 2)
        for rank in range(3)
    ]
    assert len({len(shard) for shard in shards}) == 1, "every process must run the same number of steps"
    keys = [tuple(map(tuple, batch)) for shard in shards for batch in shard]
    assert len(keys) == len(set(keys))
    whole = [tuple(map(tuple, batch)) for batch in single]
    assert set(keys) <= set(whole)
    assert len(keys) == len(whole) - len(whole) % 3


def test_seed_and_epoch_determine_the_order():
    first = epoch_batches(IdentityBatchSampler(PERSON_IDS, 5, 4, seed=5), 0)
    again = epoch_batches(IdentityBatchSampler(PERSON_IDS, 5, 4, seed=5), 0)
    other_seed = epoch_batches(IdentityBatchSampler(PERSON_IDS, 5, 4, seed=6), 0)
    next_epoch = epoch_batches(IdentityBatchSampler(PERSON_IDS, 5, 4, seed=5), 1)
    assert first == again
    assert first != other_seed and first != next_epoch


def test_restored_state_continues_with_the_next_batch():
    sampler = IdentityBatchSampler(PERSON_IDS, 5, 4, seed=9)
    sampler.set_epoch(1)
    full = list(sampler)
    sampler.batches_consumed = 3
    state = sampler.state_dict()

    restored = IdentityBatchSampler(PERSON_IDS, 5, 4, seed=9)
    restored.load_state_dict(state)
    restored.set_epoch(1)
    assert list(restored) == full[3:]
    restored.set_epoch(2)
    assert list(restored) == epoch_batches(IdentityBatchSampler(PERSON_IDS, 5, 4, seed=9), 2)

    with pytest.raises(ValueError, match="seed"):
        IdentityBatchSampler(PERSON_IDS, 5, 4, seed=10).load_state_dict(state)


def test_too_few_identities_is_a_clear_error():
    with pytest.raises(ValueError, match="fewer than ids_per_batch"):
        IdentityBatchSampler([1, 1, 2, 2], ids_per_batch=3, pairs_per_id=2)
    with pytest.raises(ValueError, match="not one batch per process"):
        IdentityBatchSampler([1, 2, 3, 4], ids_per_batch=2, pairs_per_id=1, num_replicas=4, rank=0)
