"""The nature of transfer neurons (method §6): correlation ratio, significance, overlap, language-specific neurons.

    corr_ratio     η², one-way ANOVA and Mann-Whitney U of each transfer neuron against a label -> tn_corr_ratio
    jaccard        overlap of languages' top-n sets, overall and per layer                      -> tn_jaccard
    lang_neurons   η² of every neuron against each language (App. H.3)                          -> lang_neurons
    groups         only the streaming pass: per-group sufficient statistics of mlp_act          -> group_stats

Each takes a store (path or `tnstore.Store`) and typed arguments, writes its table and returns a result whose
tables are Polars frames (`*_arrow`: the same as Arrow).
"""
from tnstore.analysis.stats.core import GroupsResult, groups
from tnstore.analysis.stats.corr import CorrRatioResult, corr_ratio
from tnstore.analysis.stats.labels import PAPER_FAMILIES
from tnstore.analysis.stats.lang import PAPER_THRESHOLDS, LangNeuronsResult, lang_neurons
from tnstore.analysis.stats.overlap import JaccardResult, jaccard

__all__ = ["corr_ratio", "jaccard", "lang_neurons", "groups", "CorrRatioResult", "JaccardResult",
           "LangNeuronsResult", "GroupsResult", "PAPER_FAMILIES", "PAPER_THRESHOLDS"]
