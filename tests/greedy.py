"""Greedy decoding compared across batch shapes, without asking for bits that only some CPUs give.

Batching and padding change the shapes of every matrix product, and BLAS/oneDNN pick kernels by
shape and CPU, so two mathematically equal runs differ in the last bits of their logits. Greedy
tokens are then equal only where the best token wins by more than that noise. These helpers find
the steps where it does, so a test can demand equality there and nowhere else.
"""

import torch

# fp32 logits of the tiny test models differ by ~1e-5 between batch shapes; a margin 100x that
# cannot be overturned by rounding.
TIE = 1e-3


@torch.no_grad()
def greedy_with_margins(model, ids: torch.Tensor, max_new_tokens: int, **kwargs) -> tuple[torch.Tensor, float]:
    """Greedy continuation of one row (1, n) and the smallest top-1 minus top-2 logit gap on its path."""
    out = model.generate(ids, max_new_tokens=max_new_tokens, do_sample=False, output_scores=True,
                         return_dict_in_generate=True, **kwargs)  # fmt: skip
    gaps = [float(s[0].float().topk(2).values.diff().abs()) for s in out.scores]
    return out.sequences[0, ids.shape[1]:], min(gaps)


def decided(margin: float) -> bool:
    """True when every greedy step's winner is beyond rounding: the path is defined by the maths."""
    return margin > TIE
