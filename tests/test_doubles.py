"""The shared test doubles only have methods of the classes they stand in for."""

from __future__ import annotations

import pytest

from tests.doubles import PINNED, mirrors


@pytest.mark.parametrize("double", list(PINNED), ids=lambda d: d.__name__)
def test_a_double_has_no_method_its_real_class_lacks(double):
    assert mirrors(double, PINNED[double]) == []


def test_the_pin_check_catches_a_method_the_real_class_does_not_have():
    class Real:
        def produce(self): ...

    class Drifted:
        def produce(self): ...

        def produce_batch_v2(self): ...

    assert mirrors(Drifted, Real) == ["produce_batch_v2"]
