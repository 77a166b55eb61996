"""Metrics for judging synthetic cells against real ones.

* :mod:`~wbcgen.metrics.distances` — Fréchet distance (float64, never complex), KID, and
  a report with a real-vs-real floor and bootstrap intervals;
* :mod:`~wbcgen.metrics.prdc` — precision, recall, density and coverage (fidelity and
  diversity apart), with a real-vs-real floor;
* :mod:`~wbcgen.metrics.similarity` — mean pairwise cosine similarity (paper Table 7);
* :mod:`~wbcgen.metrics.inception` — standard Inception-v3 FID features via torchmetrics,
  used only when the weights are on disk.
"""
from .distances import (KID_PREFERRED_BELOW, distance_report, frechet_distance, frechet_distance_features,
                        gaussian_stats, kid, trace_sqrt_product)
from .prdc import means as prdc_means, prdc, prdc_report
from .inception import find_inception_weights, inception_features, load_inception, torchmetrics_fid
from .similarity import cosine_table, mean_pairwise_cosine

__all__ = ["KID_PREFERRED_BELOW", "cosine_table", "distance_report", "find_inception_weights", "frechet_distance",
           "frechet_distance_features", "gaussian_stats", "inception_features", "kid", "load_inception",
           "mean_pairwise_cosine", "prdc", "prdc_means", "prdc_report", "torchmetrics_fid", "trace_sqrt_product"]
