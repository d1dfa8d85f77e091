"""What every rule shares: the ``Finding`` type, severities and the guides fixes link to.

The rules themselves live in their own modules (``retrace_findings`` for the user's tf.functions,
``library_findings`` for traces of Keras's, TensorFlow's and tf.data's own functions,
``call_findings``, ``input_bound``, ``training_findings``); ``rules.run_rules`` runs and ranks them. Every fix a rule
writes is code in the user's own files, never in Keras, TensorFlow or tf.data.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field


GUIDES = {
    "retrace": "https://www.tensorflow.org/guide/function#controlling_retracing",
    "performance": "https://www.tensorflow.org/guide/function",
    "predict": "https://keras.io/getting_started/faq/#whats-the-difference-between-model-methods-predict-and-call",
    "tfdata": "https://www.tensorflow.org/guide/data_performance",
    "training": "https://www.tensorflow.org/guide/keras/writing_a_training_loop_from_scratch#speeding-up_your_training_step_with_tffunction",
    "fit": "https://keras.io/api/models/model_training_apis/",
    "callbacks": "https://keras.io/guides/writing_your_own_callbacks/",
    "pydataset": "https://keras.io/api/utils/python_utils/#pydataset-class",
}

SEVERITY_RANK = {"high": 0, "medium": 1, "low": 2}


@dataclass
class Finding:
    code: str
    severity: str
    title: str
    function: str
    call_site: str
    evidence: list[str]
    estimated_savings_s: float
    fix: dict
    details: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "code": self.code, "severity": self.severity, "title": self.title,
            "function": self.function, "call_site": self.call_site, "evidence": list(self.evidence),
            "estimated_savings_s": self.estimated_savings_s, "fix": dict(self.fix),
            "details": dict(self.details),
        }


def severity_for(seconds_lost: float, occurrences: int) -> str:
    if seconds_lost >= 0.5 or occurrences >= 20:
        return "high"
    if seconds_lost >= 0.05 or occurrences >= 5:
        return "medium"
    return "low"


def at_most(severity: str, cap: str) -> str:
    """``severity``, lowered to ``cap`` if it is above it."""
    return severity if SEVERITY_RANK[severity] >= SEVERITY_RANK[cap] else cap


def site_file(site: str) -> str:
    """``dir/file.py:12`` -> ``dir/file.py`` (a site without a line stays as it is)."""
    return site.rpartition(":")[0] or site


def short_site(site: str) -> str:
    """``dir/file.py:12`` -> ``file.py:12`` for titles (the full path stays in call_site)."""
    return os.path.basename(site) if site else site
