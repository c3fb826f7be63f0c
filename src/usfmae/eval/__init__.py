"""Evaluation: metrics with confidence intervals, reports and figures."""
