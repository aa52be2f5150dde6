import torch

from conftest import random_batch
from dlf.data import Batch
from dlf.models.embedding import FieldEmbedding


def test_tokens_have_one_row_per_field_in_kind_order(small_feature_map):
    emb = FieldEmbedding(small_feature_map, dim=4)
    batch = random_batch(small_feature_map, n=5)
    out = emb(batch)
    assert out.shape == (5, 5, 4)
    offsets = [0, 7]  # c1 has 7 ids, so c2 starts at row 7 of the fused table
    for j in range(2):
        torch.testing.assert_close(out[:, j], emb.table[batch.categorical[:, j] + offsets[j]])
    torch.testing.assert_close(out[:, 2:4], batch.numeric.unsqueeze(-1) * emb.numeric_weight)


def test_multi_valued_is_mean_of_real_ids_and_padding_is_masked(small_feature_map):
    emb = FieldEmbedding(small_feature_map, dim=4)
    multi = torch.tensor([[[3, 5, 0, 0]], [[4, 0, 0, 0]], [[0, 0, 0, 0]]])
    batch = Batch(torch.full((3, 2), 2), torch.zeros(3, 2), multi, torch.zeros(3))
    base = 7 + 11  # multi-valued ids come after both categorical vocabularies
    out = emb(batch)[:, 4]
    torch.testing.assert_close(out[0], (emb.table[base + 3] + emb.table[base + 5]) / 2)
    torch.testing.assert_close(out[1], emb.table[base + 4])
    torch.testing.assert_close(out[2], torch.zeros(4))  # an empty list is a zero token, not NaN
    with torch.no_grad():  # the padding row's content must not leak into any output
        emb.table[base + 0] += 100.0
    torch.testing.assert_close(emb(batch)[:, 4], out)


def test_sparse_lookup_gives_the_same_tokens_and_the_dense_gradient_as_a_sparse_tensor(small_feature_map):
    batch = random_batch(small_feature_map, n=8)
    grads = []
    for sparse in (False, True):
        torch.manual_seed(0)
        emb = FieldEmbedding(small_feature_map, dim=4, sparse=sparse)
        out = emb(batch)
        out.pow(2).sum().backward()
        grads.append(emb.table.grad)
        if sparse:
            torch.testing.assert_close(out, dense_out)
        dense_out = out.detach()
    assert not grads[0].is_sparse and grads[1].is_sparse
    torch.testing.assert_close(grads[1].to_dense(), grads[0])
    # only the looked-up rows appear in the sparse gradient
    rows, looked_up = set(grads[1].coalesce().indices()[0].tolist()), set(emb.batch_rows(batch).tolist())
    assert looked_up <= rows <= looked_up | {7 + 11}  # plus the padding row of tags (a zero gradient)
