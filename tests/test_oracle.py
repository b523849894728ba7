"""The recorded-oracle machinery itself (tests/oracle.py): answers survive the record's format,
and a case without a record fails instead of skipping."""
import numpy as np
import pytest

from tests import oracle as O


def test_answers_read_back_as_written(tmp_path):
    value = {"y": np.arange(6.0).reshape(2, 3), "n": 3, "s": "hi", "l": [1, (2.0, None)],
             "e": {}, "i": np.array([1, 2], dtype=np.int64)}
    flat = {}
    O._flatten(value, "/case", flat)
    np.savez(tmp_path / "r.npz", **flat)
    with np.load(tmp_path / "r.npz", allow_pickle=False) as f:
        back = O._unflatten({k: f[k] for k in f.files}, "/case")
    O._assert_same(back, O._normalise(value), "case")
    assert isinstance(back["l"][1], tuple) and back["l"][1][1] is None and back["e"] == {}


def test_a_changed_answer_is_caught():
    with pytest.raises(AssertionError):
        O._assert_same(O._normalise({"y": np.ones(3)}), O._normalise({"y": np.zeros(3)}), "c")
    with pytest.raises(AssertionError):
        O._assert_same(O._normalise({"y": np.ones(3)}), O._normalise({"z": np.ones(3)}), "c")


def test_missing_record_fails_not_skips(request):
    oracle = O.Oracle(request.node, record=False)
    with pytest.raises(AssertionError, match="no recorded PyTorch answer"):
        oracle(lambda torch: {"y": np.ones(2)}, key="never-recorded")


class TestCaseNames:
    def test_tests_of_the_same_name_in_two_classes_have_two_records(self, request):
        oracle = O.Oracle(request.node, record=False)
        with pytest.raises(AssertionError, match="'TestCaseNames::test_tests_of_the_same"):
            oracle(lambda torch: 0, key="never-recorded")
