"""Batch shards for the agents with several training streams (Hieros's levels, IRIS's tokenizer, world model and
actor-critic): one device against two shards over two updates of each stream, as tests/test_batch_shards.py does
for the other agents (`check_two_shards`). A file of its own so that `pytest -n 2 --dist loadfile` runs it beside
that one.
"""

from __future__ import annotations

import pytest

from tests.test_batch_shards import cases, check_two_shards


@pytest.mark.parametrize("case", cases(several_streams=True))
def test_two_shards_compute_the_one_device_update(case):
    check_two_shards(case)
