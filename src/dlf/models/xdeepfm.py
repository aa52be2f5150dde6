"""xDeepFM (J. Lian, X. Zhou, F. Zhang, Z. Chen, X. Xie, G. Sun, KDD 2018): a Compressed Interaction Network
(CIN, explicit vector-wise interactions), a DNN (implicit) and a linear part, logits summed.

  X^0 = E1                                                          B x m x d  (m = F fields)
  X^k_{h,*} = sum_{i=1..H_{k-1}} sum_{j=1..m} W^{k,h}_{ij} (X^{k-1}_{i,*} * X^0_{j,*})   B x H_k x d
  p^k = sum over the d axis of X^k                                  B x H_k  (sum pooling)
  logit = b + sum_f w(x_f) + w_cin^T [p^1 ; ... ; p^K] + MLP(flat(E1))

Each CIN layer raises the order by one; W^k is applied as one matmul over the H_{k-1} m outer-product channels
(no bias and identity activation, as in the paper's equation). No "split half" (the paper's equation, FuxiCTR).
Deliberate: FuxiCTR's CIN layer is a Conv1d with a bias (zero-initialised, learned); ours has none, as the paper.
Defaults: FuxiCTR `xDeepFM_base` (CIN 32-32-32, DNN 500-500-500, ReLU, no BatchNorm, dropout 0); embedding_dim 16
(BARS Criteo_x4_001 setting). Init: embeddings N(0, 1e-4); Linear Xavier normal, zero bias.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from dlf.data.features import Batch, FeatureMap
from dlf.models.embedding import FieldEmbedding
from dlf.models.layers import check_config, init_linear_xavier, mlp_tower
from dlf.models.lr import LogisticRegression, LRConfig
from dlf.models.registry import register


@dataclass
class XDeepFMConfig:
    embedding_dim: int = 16
    cin_units: tuple[int, ...] = (32, 32, 32)  # H_1..H_K
    hidden_units: tuple[int, ...] = (500, 500, 500)
    dropout: float = 0.0
    batch_norm: bool = False
    embedding_init_std: float = 1e-4

    def validate(self) -> None:
        check_config(self, positive=["embedding_dim"], units=["cin_units", "hidden_units"], rates=["dropout"])


class CINLayer(nn.Module):
    """X^k = W^k (X^{k-1} outer X^0): B x H_{k-1} x d, B x m x d -> B x H_k x d."""

    def __init__(self, prev_maps: int, num_fields: int, maps: int):
        super().__init__()
        self.weight = nn.Linear(prev_maps * num_fields, maps, bias=False)  # W^k[h, i*m + j]

    def forward(self, x_prev: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        b, _, d = x0.shape
        z = torch.einsum("bid,bjd->bijd", x_prev, x0).reshape(b, -1, d)  # B x (H_{k-1} m) x d, channel i*m + j
        return self.weight(z.transpose(1, 2)).transpose(1, 2)  # B x H_k x d


@register("xdeepfm", XDeepFMConfig, "xDeepFM: compressed interaction network + DNN + linear part")
class XDeepFM(nn.Module):
    def __init__(self, feature_map: FeatureMap, cfg: XDeepFMConfig):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.linear = LogisticRegression(feature_map, LRConfig(cfg.embedding_init_std))
        self.embedding = FieldEmbedding(feature_map, cfg.embedding_dim, cfg.embedding_init_std)
        m = self.embedding.num_fields
        maps = [m, *cfg.cin_units]
        self.cin = nn.ModuleList(CINLayer(maps[k], m, maps[k + 1]) for k in range(len(cfg.cin_units)))
        self.cin_head = nn.Linear(sum(cfg.cin_units), 1)
        self.dnn = mlp_tower(m * cfg.embedding_dim, cfg.hidden_units, 1, cfg.dropout, cfg.batch_norm)
        init_linear_xavier(self)

    def cin_pooled(self, x0: torch.Tensor) -> torch.Tensor:  # B x m x d -> [p^1 ; ... ; p^K], B x sum H_k
        pooled, x = [], x0
        for layer in self.cin:
            x = layer(x, x0)  # B x H_k x d
            pooled.append(x.sum(dim=-1))  # B x H_k
        return torch.cat(pooled, dim=1)

    def forward(self, batch: Batch) -> torch.Tensor:
        e = self.embedding(batch)  # B x m x d
        y_cin = self.cin_head(self.cin_pooled(e)).squeeze(-1)  # B
        y_dnn = self.dnn(e.flatten(1)).squeeze(-1)  # B
        return self.linear(batch) + y_cin + y_dnn
