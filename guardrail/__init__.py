"""spillguard: a hallucination guardrail for local Hugging Face LLMs.

It captures a model's raw logits while it generates, scores the answer tokens with spilled
energy (Minut et al., ICLR 2026), compares the score with a calibrated threshold and flags,
retries or abstains.

>>> from guardrail import Guard
>>> verdict = Guard.default().ask("What is the capital of Australia?")
>>> verdict.action, verdict.answer, verdict.score
"""

from guardrail.attempts import AttemptLoop as AttemptLoop
from guardrail.attempts import Decision as Decision
from guardrail.attempts import Judged as Judged
from guardrail.attempts import arun_attempts as arun_attempts
from guardrail.attempts import run_attempts as run_attempts
from guardrail.calibration import Calibration as Calibration
from guardrail.errors import CalibrationError as CalibrationError
from guardrail.errors import CaptureError as CaptureError
from guardrail.errors import ContextLengthError as ContextLengthError
from guardrail.errors import DatasetError as DatasetError
from guardrail.errors import HallucinationDetected as HallucinationDetected
from guardrail.errors import InvalidInputError as InvalidInputError
from guardrail.errors import ModelError as ModelError
from guardrail.errors import NoContextError as NoContextError
from guardrail.errors import NonFiniteLogitsError as NonFiniteLogitsError
from guardrail.errors import NotGuardedError as NotGuardedError
from guardrail.errors import SpillguardError as SpillguardError
from guardrail.errors import UnscoredResponseError as UnscoredResponseError
from guardrail.guard import Guard as Guard
from guardrail.localize import ExplicitSpan as ExplicitSpan
from guardrail.localize import HeuristicLocalizer as HeuristicLocalizer
from guardrail.localize import LLMExtractionLocalizer as LLMExtractionLocalizer
from guardrail.localize import Span as Span
from guardrail.localize import WholeAnswer as WholeAnswer
from guardrail.policy import Action as Action
from guardrail.policy import Policy as Policy
from guardrail.policy import RetryStep as RetryStep
from guardrail.scores import TokenScores as TokenScores
from guardrail.scores import TokenStep as TokenStep
from guardrail.verdict import METADATA_KEY as METADATA_KEY
from guardrail.verdict import Attempt as Attempt
from guardrail.verdict import Evidence as Evidence
from guardrail.verdict import Verdict as Verdict

__version__ = "0.1.0"

__all__ = [
    "METADATA_KEY",
    "Action",
    "Attempt",
    "AttemptLoop",
    "Calibration",
    "CalibrationError",
    "CaptureError",
    "ContextLengthError",
    "DatasetError",
    "Decision",
    "Evidence",
    "ExplicitSpan",
    "Guard",
    "HallucinationDetected",
    "HeuristicLocalizer",
    "InvalidInputError",
    "Judged",
    "LLMExtractionLocalizer",
    "ModelError",
    "NoContextError",
    "NonFiniteLogitsError",
    "NotGuardedError",
    "Policy",
    "RetryStep",
    "Span",
    "SpillguardError",
    "TokenScores",
    "TokenStep",
    "UnscoredResponseError",
    "Verdict",
    "WholeAnswer",
    "arun_attempts",
    "run_attempts",
]
