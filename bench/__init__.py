"""Benchmarks: the AWS call budget (`python -m bench.call_budget`, `make bench`), the operator at
scale (`bench/operator_scale.py`, `make bench-operator`) and doctor's diagnosis at scale
(`bench/diagnosis_scale.py`). None of it ships; each runs from the repository root."""
