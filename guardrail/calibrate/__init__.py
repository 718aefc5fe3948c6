"""The calibration and evaluation toolkit (extra ``spillguard[calibrate]``).

Offline, on labelled questions: generate answers once (cached), grade them, score them every
way, fit a :class:`~guardrail.Calibration`, and report detection quality. The runtime guard
never imports this package.

Modules, one concept each: :mod:`~guardrail.calibrate.datasets` (labelled question sets),
:mod:`~guardrail.calibrate.grading` (answer vs references), :mod:`~guardrail.calibrate.runs`
(generation runs and their cache), :mod:`~guardrail.calibrate.metrics` (AUROC, thresholds),
:mod:`~guardrail.calibrate.scoring` (scorers over located spans),
:mod:`~guardrail.calibrate.fitting` (choosing a calibration), :mod:`~guardrail.calibrate.summary`
(what ``spillguard evaluate`` prints) and :mod:`~guardrail.calibrate.report` (the HTML report).
"""

from guardrail.calibrate.datasets import DATASETS as DATASETS
from guardrail.calibrate.datasets import Dataset as Dataset
from guardrail.calibrate.datasets import Item as Item
from guardrail.calibrate.datasets import fetch_qa_wikidata as fetch_qa_wikidata
from guardrail.calibrate.datasets import load as load
from guardrail.calibrate.datasets import select as select
from guardrail.calibrate.fitting import DEFAULT_METRICS as DEFAULT_METRICS
from guardrail.calibrate.fitting import fit as fit
from guardrail.calibrate.metrics import bootstrap_auroc as bootstrap_auroc
from guardrail.calibrate.runs import Record as Record
from guardrail.calibrate.runs import Run as Run
from guardrail.calibrate.runs import generate as generate
from guardrail.calibrate.scoring import Scored as Scored
from guardrail.calibrate.scoring import locate as locate
from guardrail.calibrate.scoring import standard_localizers as standard_localizers
from guardrail.calibrate.summary import render as render
from guardrail.calibrate.summary import summarize as summarize

__all__ = [
    "DATASETS",
    "DEFAULT_METRICS",
    "Dataset",
    "Item",
    "Record",
    "Run",
    "Scored",
    "bootstrap_auroc",
    "fetch_qa_wikidata",
    "fit",
    "generate",
    "load",
    "locate",
    "render",
    "select",
    "standard_localizers",
    "summarize",
]
