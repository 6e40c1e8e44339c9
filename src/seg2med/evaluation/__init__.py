"""Evaluation of synthetic volumes: file pairing, per-subject metrics, statistics and the HTML report."""

from seg2med.evaluation.core import CaseResult, EvalOptions, Evaluation, evaluate_case, evaluate_cases
from seg2med.evaluation.pairs import Case, collect_cases, parse_method
from seg2med.evaluation.report import summarize, write_report

__all__ = ["Case", "CaseResult", "EvalOptions", "Evaluation", "collect_cases", "evaluate_case", "evaluate_cases", "parse_method", "summarize", "write_report"]
