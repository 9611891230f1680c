"""The garbage collector as a serving node sets it up once started."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from s25rbl.node.runloop import GC_YOUNG, settle_collector


@pytest.fixture
def collector() -> Iterator[None]:
    thresholds = gc.get_threshold()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)


@pytest.mark.usefixtures("collector")
def test_what_start_up_built_is_set_aside_and_young_collections_are_rarer() -> None:
    built = [[n] for n in range(1000)]  # containers made before the node settles
    _, middle, old = gc.get_threshold()
    settle_collector()
    assert gc.get_freeze_count() >= len(built)
    assert gc.get_threshold() == (GC_YOUNG, middle, old)
