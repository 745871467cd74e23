"""The noise model: what each record should hold given its own inputs, and how far rounding may move it.

For every record of the spec the model takes one side's recorded inputs (this step's records and
the previous step's parameters, as `records.py`'s dataflow graph names them) and returns:

- `value`: the op applied to those inputs, in float64 (the harness's own arithmetic, not an
  implementation's);
- `sigma`: the standard deviation of the op's own rounding where the op is a sum (matmuls, batch
  sums, means): the rounding of a sum of n terms in unknown order is a random walk over its partial
  sums, whose size follows from the terms themselves (see `sum_sigma`);
- `worst` (asked for only where a residual goes beyond the random walk): the most that sum can round
  in any order of addition (`sum_worst`), which origin.py uses to tell a sorted or blocked sum from
  an op computed differently;
- `fixed`: a bound on the op's deterministic rounding (a few units of roundoff of elementwise ops,
  the conditioning of exp, log, sigmoid and tanh, storage in the record's dtype).

Two correct sides may then differ at a record by at most Z_SIGMA * sqrt(sigma_A^2 + sigma_B^2)
+ fixed_A + fixed_B (the record's *noise bound*), and each side's deviation from `value` is its own
rounding, so (R_B - value_B) - (R_A - value_A) must stay within the same bound unless the op
itself is computed differently (an *origin*). docs/comparing.md derives each form.

One file per family of ops: sums.py (matmuls, batch sums), elementwise.py (activations, softmax),
loss.py (the loss and the gradient at the logits), update.py (the optimizer); model.py picks the form
of each record from the dataflow graph, carried.py what it inherits from its inputs' bounds.
"""

from harness.judge.noise.base import C_ELEM, SOURCES, UNIT_ROUNDOFF, Z_SIGMA, Expected, Inputs, MissingInput
from harness.judge.noise.carried import carried
from harness.judge.noise.model import expected
from harness.judge.noise.sums import batch_sum, dot, ordered_partial_sums, proportional_rss, rss, sum_sigma, sum_worst

__all__ = ["C_ELEM", "SOURCES", "UNIT_ROUNDOFF", "Z_SIGMA", "Expected", "Inputs", "MissingInput", "batch_sum",
           "carried", "dot", "expected", "ordered_partial_sums", "proportional_rss", "rss", "sum_sigma", "sum_worst"]
