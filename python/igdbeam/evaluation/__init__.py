"""Evaluating recommendations: ranking and diversity metrics, token-level analysis, bootstrap
intervals and the experiment report.
"""
