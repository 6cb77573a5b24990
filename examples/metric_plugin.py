"""A metric as a vaelab plugin: how correlated the code dimensions are (one file, nothing in vaelab).

``vaelab --plugin examples/metric_plugin.py evaluate RUN --metrics code_correlation`` (or ``all``)
writes ``code_correlation.mean_abs`` and ``code_correlation.max_abs`` into RUN/eval.json; the table,
`vaelab report` and the study of a sweep show them. A disentangled code has independent dimensions,
so both are near 0 (a weaker, unsupervised cousin of the total correlation that FactorVAE and
β-TCVAE penalise). Collapsed dimensions (constant codes) are left out.
"""
from __future__ import annotations

import numpy as np

from vaelab.plugins import register_metric


@register_metric("code_correlation", title="Code correlation", needs="images",
                 defaults={"num_train": 10_000},  # the `fast` profile divides counts named num_* by 10
                 headline=["mean_abs", "max_abs"])
def code_correlation(sampler, seed, num_train):
    codes = sampler.sample_unlabelled(num_train, np.random.default_rng(seed))  # posterior means, N×D
    live = codes.std(axis=0) > 1e-8
    if live.sum() < 2:
        return {"mean_abs": 0.0, "max_abs": 0.0, "dims": int(live.sum())}
    c = np.abs(np.corrcoef(codes[:, live], rowvar=False))
    off = c[~np.eye(len(c), dtype=bool)]
    return {"mean_abs": float(off.mean()), "max_abs": float(off.max()), "dims": int(live.sum())}
