"""Metric sources: what each variant did, as counts and sums the statistics can weigh."""
