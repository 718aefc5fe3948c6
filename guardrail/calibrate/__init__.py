"""The calibration and evaluation toolkit (extra ``spillguard[calibrate]``).

Offline, on labelled questions: generate answers once (cached), grade them, score them every
way, fit a :class:`~guardrail.Calibration`, and report detection quality. The runtime guard
never imports this package.

Modules, one concept each: :mod:`~guardrail.calibrate.datasets` (labelled question sets),
:mod:`~guardrail.calibrate.grading` (answer vs references), :mod:`~guardrail.calibrate.runs`
(generation runs and their cache), :mod:`~guardrail.calibrate.metrics` (AUROC, thresholds),
:mod:`~guardrail.calibrate.scoring` (scorers over located spans),
:mod:`~guardrail.calibrate.fitting` (choosing a calibration), :mod:`~guardrail.calibrate.summary`
(what ``spillguard evaluate`` prints) and :mod:`~guardrail.calibrate.report` (the HTML report);
:mod:`~guardrail.calibrate.selection` (leave-one-task-out choice of the detector),
:mod:`~guardrail.calibrate.features` (its columns, and normalisations beyond the paper),
:mod:`~guardrail.calibrate.rag` (RAG prompt shapes), :mod:`~guardrail.calibrate.bigbench`
(the pinned BIG-bench sdist) and :mod:`~guardrail.calibrate.files` (private, bounded files).
"""

from guardrail.calibrate.bigbench import fetch as fetch_bigbench
from guardrail.calibrate.datasets import DATASETS as DATASETS
from guardrail.calibrate.datasets import Dataset as Dataset
from guardrail.calibrate.datasets import Item as Item
from guardrail.calibrate.datasets import fetch_qa_wikidata as fetch_qa_wikidata
from guardrail.calibrate.datasets import load as load
from guardrail.calibrate.datasets import select as select
from guardrail.calibrate.datasets import tasks as tasks
from guardrail.calibrate.fitting import DEFAULT_METRICS as DEFAULT_METRICS
from guardrail.calibrate.fitting import fit as fit
from guardrail.calibrate.fitting import parse_goal as parse_goal
from guardrail.calibrate.metrics import bootstrap_auroc as bootstrap_auroc
from guardrail.calibrate.runs import Record as Record
from guardrail.calibrate.runs import Run as Run
from guardrail.calibrate.runs import generate as generate
from guardrail.calibrate.runs import retry_verdicts as retry_verdicts
from guardrail.calibrate.scoring import Scored as Scored
from guardrail.calibrate.scoring import locate as locate
from guardrail.calibrate.scoring import standard_localizers as standard_localizers
from guardrail.calibrate.selection import Selection as Selection
from guardrail.calibrate.selection import TaskWarning as TaskWarning
from guardrail.calibrate.selection import select as select_detector
from guardrail.calibrate.summary import render as render
from guardrail.calibrate.summary import render_selection as render_selection
from guardrail.calibrate.summary import retry_summary as retry_summary
from guardrail.calibrate.summary import summarize as summarize

__all__ = [
    "DATASETS",
    "DEFAULT_METRICS",
    "Dataset",
    "Item",
    "Record",
    "Run",
    "Scored",
    "Selection",
    "TaskWarning",
    "bootstrap_auroc",
    "fetch_bigbench",
    "fetch_qa_wikidata",
    "fit",
    "generate",
    "load",
    "locate",
    "parse_goal",
    "render",
    "render_selection",
    "retry_summary",
    "retry_verdicts",
    "select",
    "select_detector",
    "standard_localizers",
    "summarize",
    "tasks",
]
