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
