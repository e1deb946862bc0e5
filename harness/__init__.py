"""Workloads, measurement, cost model, results and the command-line entry points."""
