"""One record's verdict: the metrics of a difference, the noise model (what each op should hold and how far
rounding may move it), origin against propagated, and records whose bound says nothing."""
