from __future__ import annotations

import pytest

from qmpevents.collect.buffer import DropOldestBuffer


def test_overflow_drops_the_oldest_and_counts() -> None:
    buffer: DropOldestBuffer[int] = DropOldestBuffer(3)
    for i in range(5):
        buffer.append(i)
    assert buffer.take(10) == [2, 3, 4]
    assert buffer.dropped == 2


def test_restore_puts_items_back_in_front_within_the_limit() -> None:
    buffer: DropOldestBuffer[int] = DropOldestBuffer(4)
    for i in range(4):
        buffer.append(i)
    taken = buffer.take(2)
    buffer.append(4)
    buffer.append(5)
    buffer.restore(taken)  # 0 1 2 3 4 5: two too many, the two oldest go
    assert buffer.oldest() == 2
    assert buffer.take(10) == [2, 3, 4, 5]
    assert buffer.dropped == 2


def test_drop_all_counts() -> None:
    buffer: DropOldestBuffer[int] = DropOldestBuffer(4)
    buffer.append(1)
    assert buffer.drop_all() == 1
    assert (len(buffer), buffer.dropped) == (0, 1)


def test_limit_must_be_positive() -> None:
    with pytest.raises(ValueError):
        DropOldestBuffer(0)
