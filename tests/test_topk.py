from __future__ import annotations

import pytest
import torch

from neurolabel.plugin_core.pipeline.topk import (
    MAX_MAP_SIDE,
    StreamingTopK,
    batch_cell_keys,
    cell_keys,
)


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


def _stream(acts: torch.Tensor, ids: torch.Tensor, batch: int, **kw) -> StreamingTopK:
    topk = StreamingTopK(k=5, quantile=0.9, reservoir=300, **kw)
    for start in range(0, len(ids), batch):
        topk.update(acts[start : start + batch], ids[start : start + batch])
    return topk


def _same(a, b) -> None:
    for name in ("values", "ids", "maps", "min", "max", "threshold"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    assert a.count == b.count
    assert torch.allclose(a.mean, b.mean) and torch.allclose(a.std, b.std)


def test_shards_merge_exactly_into_the_single_pass_state():
    torch.manual_seed(1)
    acts = torch.randn(90, 6, 9, 9).round(decimals=1)  # rounding makes ties
    ids = torch.arange(90)
    whole = _stream(acts, ids, batch=7).finalize()
    # Three shards, streamed with other batch sizes and merged in another order.
    parts = [
        _stream(acts[s], ids[s], batch=b)
        for s, b in [(slice(0, 31), 4), (slice(31, 60), 16), (slice(60, 90), 3)]
    ]
    merged = parts[2]
    merged.merge(parts[0].state_dict())
    merged.merge(parts[1].state_dict())
    _same(merged.finalize(), whole)
    # The reservoir is a real sample: smaller than all cells, its quantile near the true one.
    cells = acts.permute(1, 0, 2, 3).reshape(6, -1)
    assert merged._res_values.shape == (6, 300)
    assert torch.allclose(whole.threshold, torch.quantile(cells, 0.9, dim=1), atol=0.35)
    # Ties go to the lower image index.
    tied = StreamingTopK(k=2)
    tied.update(torch.ones(4, 1), torch.tensor([3, 1, 2, 0]))
    assert tied.finalize().ids.tolist() == [[0, 1]]


def test_state_dict_round_trip_resumes_exactly():
    torch.manual_seed(2)
    acts = torch.randn(40, 3, 5, 5)
    ids = torch.arange(40)
    whole = _stream(acts, ids, batch=8).finalize()
    first = _stream(acts[:24], ids[:24], batch=8)
    resumed = StreamingTopK(k=5, quantile=0.9, reservoir=300)
    resumed.load_state_dict(first.state_dict())
    for start in range(24, 40, 8):
        resumed.update(acts[start : start + 8], ids[start : start + 8])
    _same(resumed.finalize(), whole)
    with pytest.raises(ValueError, match="made with"):
        StreamingTopK(k=4, quantile=0.9, reservoir=300).load_state_dict(first.state_dict())
    other_seed = _stream(acts, ids, batch=8, seed=5).finalize()
    assert not torch.equal(other_seed.threshold, whole.threshold)


def test_saved_and_loaded_states_are_snapshots_of_a_state_updated_in_place():
    # The stream updates its tensors in place: a state_dict taken earlier (a checkpoint, a
    # shard sent to another rank) and the dict a stream was loaded from must not follow it.
    torch.manual_seed(4)
    acts = torch.randn(40, 3, 5, 5)
    ids = torch.arange(40)
    stream = _stream(acts[:16], ids[:16], batch=8)
    saved = stream.state_dict()
    before = {name: t.clone() for name, t in saved.items() if isinstance(t, torch.Tensor)}
    loaded = StreamingTopK(k=5, quantile=0.9, reservoir=300)
    loaded.load_state_dict(saved)
    for start in range(16, 40, 8):
        stream.update(acts[start : start + 8], ids[start : start + 8])
        loaded.update(acts[start : start + 8], ids[start : start + 8])
    for name, tensor in before.items():
        assert torch.equal(saved[name], tensor), name
    assert not torch.equal(stream.state_dict()["values"], before["values"])  # it did change


def test_reservoir_is_the_bottom_k_of_every_cell_key():
    torch.manual_seed(3)
    acts = torch.randn(50, 4, 6, 6)
    ids = torch.randperm(50) + 100  # any global indices, in any order
    topk = _stream(acts, ids, batch=6)
    topk._flush_reservoir()
    positions = (ids.unsqueeze(1) * 36 + torch.arange(36)).reshape(-1)
    keys = cell_keys(positions)
    best = keys.topk(300, largest=False).indices
    assert sorted(topk._res_keys.tolist()) == sorted(keys[best].tolist())
    cells = acts.permute(1, 0, 2, 3).reshape(4, -1)  # [C, image * cell], stream order
    by_key = dict(zip(keys.tolist(), range(len(keys)), strict=True))
    columns = torch.tensor([by_key[k] for k in topk._res_keys.tolist()])
    assert torch.equal(topk._res_values, cells[:, columns])
    # Keys of a batch are computed once and shared; a batch changed in place gets new ones.
    batch = torch.tensor([1, 2])
    first = batch_cell_keys(batch, 4)
    assert batch_cell_keys(batch, 4) is first
    batch += 1
    assert torch.equal(batch_cell_keys(batch, 4), batch_cell_keys(torch.tensor([2, 3]), 4))


def best_per_group(acts: torch.Tensor, groups: torch.Tensor, k: int):
    """Per neuron: the best image of each group, the k best groups (value desc, id asc)."""
    scores = acts.amax(dim=(2, 3)) if acts.ndim == 4 else acts
    out_ids, out_values = [], []
    for unit in range(scores.shape[1]):
        best: dict[int, tuple[float, int]] = {}
        for image in range(scores.shape[0]):
            value, group = float(scores[image, unit]), int(groups[image])
            if group not in best or (-value, image) < (-best[group][0], best[group][1]):
                best[group] = (value, image)
        ranked = sorted(best.values(), key=lambda pair: (-pair[0], pair[1]))[:k]
        ranked += [(float("-inf"), -1)] * (k - len(ranked))
        out_values.append([v for v, _ in ranked])
        out_ids.append([i for _, i in ranked])
    return torch.tensor(out_values), torch.tensor(out_ids)


@pytest.mark.parametrize("spatial", [True, False])
def test_one_exemplar_per_group_matches_brute_force_in_batches_shards_and_resumes(spatial):
    torch.manual_seed(1)
    images = 157
    acts = torch.randn(images, 6, 4, 5) if spatial else torch.randn(images, 6)
    acts[10:20] = acts[10:11]  # ties across groups: the lower image index wins
    groups = torch.randint(0, 23, (images,))
    values, ids = best_per_group(acts, groups, k=7)

    def stream(parts: list[range]) -> StreamingTopK:
        topk = StreamingTopK(k=7, distinct_groups=True)
        for part in parts:
            index = torch.tensor(list(part))
            topk.update(acts[index], index, groups[index])
        return topk

    single = stream([range(s, min(s + 13, images)) for s in range(0, images, 13)])
    state = single.finalize()
    assert torch.equal(state.ids, ids) and torch.allclose(state.values, values)
    # every neuron's exemplars come from distinct groups
    for row in state.ids.tolist():
        kept = [int(groups[i]) for i in row if i >= 0]
        assert len(kept) == len(set(kept))
    # shards merged, and a state saved and resumed, give the same exemplars
    shard_a = stream([range(0, 70), range(140, images)])
    shard_b = stream([range(70, 140)])
    shard_a.merge(shard_b.state_dict())
    assert torch.equal(shard_a.finalize().ids, ids)
    resumed = StreamingTopK(k=7, distinct_groups=True)
    resumed.load_state_dict(stream([range(0, 90)]).state_dict())
    resumed.update(acts[90:], torch.arange(90, images), groups[90:])
    assert torch.equal(resumed.finalize().ids, ids)


def test_fewer_groups_than_k_leaves_empty_slots():
    topk = StreamingTopK(k=4, distinct_groups=True)
    topk.update(torch.tensor([[1.0], [3.0], [2.0]]), torch.arange(3), torch.tensor([5, 5, 9]))
    state = topk.finalize()
    assert state.ids.tolist() == [[1, 2, -1, -1]]
    assert state.values[0, 2:].isinf().all()
    with pytest.raises(ValueError, match="needs the group"):
        topk.update(torch.ones(1, 1), torch.tensor([3]))
    with pytest.raises(ValueError, match="made with"):  # a grouped state is not an ungrouped one
        StreamingTopK(k=4).load_state_dict(topk.state_dict())
