"""In-place edits through views: storage is shared, and under autograd the base's graph sees the
edit (PyTorch's CopySlices behaviour) or a clear error says why it can't."""
import numpy as np
import pytest

import ddp


def test_element_view_writes_through_to_base():
    x = ddp.zeros(3)
    x[1].add_(5)
    x[0:1].mul_(0).add_(2)
    np.testing.assert_array_equal(x.numpy(), [2.0, 5.0, 0.0])


def test_inplace_on_slice_of_non_leaf_reaches_the_base_graph():
    x_np = np.array([1.0, 2.0, 3.0, 4.0])
    x = ddp.tensor(x_np, requires_grad=True)
    a = x * 1
    a[:2].mul_(2)                     # a = [2 x0, 2 x1, x2, x3]
    (a * a).sum().backward()
    scale = np.array([2.0, 2.0, 1.0, 1.0])
    np.testing.assert_allclose(x.grad.numpy(), 2 * scale * scale * x_np)


def test_inplace_add_of_grad_tensor_into_slice():
    x = ddp.tensor([1.0, 2.0, 3.0], requires_grad=True)
    v = ddp.tensor([10.0, 20.0], requires_grad=True)
    a = x * 3
    a[1:].add_(v)                     # a = [3 x0, 3 x1 + v0, 3 x2 + v1]
    a.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [3.0, 3.0, 3.0])
    np.testing.assert_allclose(v.grad.numpy(), [1.0, 1.0])


def test_inplace_on_view_of_leaf_requiring_grad_raises():
    w = ddp.ones(3, requires_grad=True)
    with pytest.raises(RuntimeError, match="leaf Variable that requires grad"):
        w[0].mul_(2)
    with ddp.no_grad():               # allowed outside autograd (optimizer-style updates)
        w[0].mul_(2)
    assert w.detach().numpy()[0] == 2.0


def test_inplace_on_reshaped_view_under_autograd_is_a_clear_error():
    x = ddp.ones(2, 2, requires_grad=True)
    a = x * 1
    with pytest.raises(RuntimeError, match="view made by reshape"):
        a.reshape(4).add_(1)


def test_edit_through_view_bumps_base_version_and_is_caught():
    x = ddp.tensor([0.5, 1.0], requires_grad=True)
    y = x.exp()                       # ExpBackward saves its output y
    y[0:1].add_(1)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        y.sum().backward()
