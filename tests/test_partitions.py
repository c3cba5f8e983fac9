"""Wallet partitions: N workers split the wallets between them, each wallet in exactly
one partition, evenly (wallet ids are random), and the routing key says which."""

from __future__ import annotations

import uuid
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from iaas.spending.batch import Partition, partition_of


@given(st.uuids(), st.integers(min_value=1, max_value=64))
def test_every_wallet_is_in_exactly_one_partition(wallet_id, count):
    owners = [p for p in range(count) if Partition(p, count).of(wallet_id)]
    assert owners == [partition_of(wallet_id, count)]
    partition = Partition(owners[0], count)
    assert partition.low <= wallet_id
    assert partition.high is None or wallet_id < partition.high


def test_partitions_split_random_wallets_evenly():
    counts = Counter(partition_of(uuid.uuid4(), 8) for _ in range(80_000))
    assert min(counts.values()) > 9_000
    assert max(counts.values()) < 11_000


def test_a_partition_is_named_i_of_n():
    assert Partition.parse("2/8") == Partition(2, 8)
    assert str(Partition(2, 8)) == "2/8"
    with pytest.raises(ValueError, match="does not exist"):
        Partition.parse("8/8")
