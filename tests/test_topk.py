from __future__ import annotations

import torch

from neurolabel.plugin_core.topk import MAX_MAP_SIDE, StreamingTopK


def brute_force(acts: torch.Tensor, k: int):
    scores = acts.amax(dim=(2, 3)) if acts.ndim == 4 else acts
    values, ids = scores.T.topk(k, dim=1)
    return values, ids


def test_streaming_topk_matches_brute_force_spatial():
    torch.manual_seed(0)
    acts = torch.randn(203, 7, 5, 6)
    topk = StreamingTopK(k=9, quantile=0.9, reservoir=10**6)
    for start in range(0, 203, 16):
        topk.update(acts[start : start + 16], torch.arange(start, min(start + 16, 203)))
    state = topk.finalize()
    values, ids = brute_force(acts, 9)
    assert torch.equal(state.ids, ids)
    assert torch.allclose(state.values, values)
    # the stored maps are exactly those of the exemplar images
    assert torch.allclose(
        state.maps, acts[ids].reshape(7, 9, 7, 5, 6)[torch.arange(7), :, torch.arange(7)]
    )
    scores = acts.amax(dim=(2, 3))
    assert torch.allclose(state.mean, scores.mean(0), atol=1e-5)
    assert torch.allclose(state.max, scores.max(0).values)
    assert torch.allclose(state.std, scores.std(0, unbiased=False), atol=1e-4)
    # reservoir larger than the data: the threshold is the exact quantile of all map cells
    cells = acts.permute(1, 0, 2, 3).reshape(7, -1).double()
    assert torch.allclose(state.threshold, torch.quantile(cells, 0.9, dim=1).float(), atol=1e-5)


def test_streaming_topk_vector_and_mean_reduce_and_short_stream():
    acts = torch.randn(5, 4)
    topk = StreamingTopK(k=8)
    topk.update(acts, torch.arange(5))
    state = topk.finalize()
    assert state.maps is None
    assert (state.ids[:, 5:] == -1).all() and torch.isinf(state.values[:, 5:]).all()
    assert torch.equal(state.ids[:, :5], acts.T.argsort(dim=1, descending=True))
    spatial = torch.randn(10, 3, 4, 4)
    mean_topk = StreamingTopK(k=2, reduce="mean")
    mean_topk.update(spatial, torch.arange(10))
    assert torch.equal(mean_topk.finalize().ids, spatial.mean((2, 3)).T.topk(2).indices)


def test_memory_is_independent_of_image_count():
    topk = StreamingTopK(k=4, reservoir=64)
    for start in range(0, 640, 64):
        topk.update(torch.rand(64, 3, 100, 100), torch.arange(start, start + 64))
    state = topk.finalize()
    assert state.maps.shape == (3, 4, MAX_MAP_SIDE, MAX_MAP_SIDE)
    assert topk._res_values.shape == (3, 64)
    assert state.count == 640


def test_dead_neurons():
    acts = torch.zeros(6, 3)
    acts[:, 1] = torch.arange(6.0)
    topk = StreamingTopK(k=2)
    topk.update(acts, torch.arange(6))
    assert topk.finalize().dead().tolist() == [True, False, True]
