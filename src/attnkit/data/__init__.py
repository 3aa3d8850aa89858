"""Data: loaders for bundled real data and generated tasks."""

from attnkit.data.cluttered import ClutteredMNIST, load_digits, make_cluttered, split_digits
from attnkit.data.evidence import EvidenceTask, make_evidence_task

__all__ = [
    "ClutteredMNIST",
    "EvidenceTask",
    "load_digits",
    "make_cluttered",
    "make_evidence_task",
    "split_digits",
]
