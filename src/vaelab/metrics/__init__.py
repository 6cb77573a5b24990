"""Disentanglement metrics, as google-research/disentanglement_lib defines them (docs/metrics.md).

Array cores (numpy in, Python numbers out; codes ``N x D`` float, factors ``N x K`` int):
``mig``, ``sap``, ``dci``, ``modularity_explicitness``, ``irs``, ``gaussian_total_correlation``,
``gaussian_wasserstein_correlation`` (+ ``_norm``), ``mutual_info_score``, ``kl_per_latent``,
``active_units``; ``*_details`` variants return the per-factor / per-code breakdowns.

Scores that sample a :class:`~vaelab.data.FactorDataset` through ``encode(uint8 images) -> codes``:
``beta_vae_score``, ``factor_vae_score`` (grid datasets only) and ``mig_score``, ``sap_score``,
``dci_score``, ``modularity_score``, ``irs_score``, ``unsupervised_score``, ``active_units_score``.
``vaelab.metrics.evaluate.evaluate`` (also ``vaelab.evaluate``) runs them all and writes ``eval.json``;
each metric module registers what ``evaluate`` runs (``vaelab.metrics.registry``) when it is imported.
"""
import importlib as _importlib

#: the built-in metric modules, imported (and so registered) in this order: the order in which
#: ``vaelab evaluate`` runs them and eval.json, the table and ``--metrics all`` list them
BUILTIN = ("beta_vae", "factor_vae", "mig", "sap", "dci", "modularity", "irs", "unsupervised", "latent", "elbo")
for _module in BUILTIN:
    _importlib.import_module(f"{__name__}.{_module}")
from .beta_vae import beta_vae_from_features, beta_vae_score
from .dci import (completeness, completeness_per_factor, dci, dci_details, dci_from_importance, dci_score,
                  disentanglement, disentanglement_per_code, importance_gbt)
from .elbo import elbo_score
from .factor_vae import factor_vae_accuracy, factor_vae_score
from .info import discrete_entropy, discrete_mutual_info, discretize, mutual_info
from .irs import irs, irs_details, irs_score
from .latent import active_units, active_units_mask, active_units_score, kl_per_latent, latent_variances
from .mig import mig, mig_details, mig_score
from .modularity import (explicitness, modularity, modularity_explicitness, modularity_explicitness_details,
                         modularity_per_code, modularity_score)
from .sampling import CodeSampler
from .sap import sap, sap_details, sap_matrix, sap_score
from .unsupervised import (gaussian_total_correlation, gaussian_wasserstein_correlation,
                           gaussian_wasserstein_correlation_norm, mutual_info_score, total_correlation_from_cov,
                           unsupervised, unsupervised_score, wasserstein_correlation_from_cov)

from . import evaluate  # the module: vaelab.metrics.evaluate.evaluate(...) (vaelab.evaluate is the function)


__all__ = [
    "CodeSampler", "active_units", "active_units_mask", "active_units_score", "beta_vae_from_features",
    "beta_vae_score", "completeness", "completeness_per_factor", "dci", "dci_details", "dci_from_importance",
    "dci_score", "discrete_entropy", "discrete_mutual_info", "discretize", "disentanglement",
    "disentanglement_per_code", "elbo_score", "explicitness", "factor_vae_accuracy", "factor_vae_score",
    "gaussian_total_correlation", "gaussian_wasserstein_correlation", "gaussian_wasserstein_correlation_norm",
    "importance_gbt", "irs", "irs_details", "irs_score", "kl_per_latent", "latent_variances", "mig",
    "mig_details", "mig_score", "modularity", "modularity_explicitness", "modularity_explicitness_details",
    "modularity_per_code", "modularity_score", "mutual_info", "mutual_info_score", "sap", "sap_details",
    "sap_matrix", "sap_score", "total_correlation_from_cov", "unsupervised", "unsupervised_score",
    "wasserstein_correlation_from_cov",
]
