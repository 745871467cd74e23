"""What a side computed in beyond its dtype. Its matmuls may round their operands first to TF32, bfloat16
or float16 and accumulate in float32 (a GPU's tensor cores under JAX's default precision, PyTorch's
allow_tf32); it may store every tensor in bfloat16 or float16, computing each op in float32 from the
stored values and rounding the result (a network kept in half precision); and it may keep its sums' running
totals in that format too (`accumulate`: JAX's bfloat16 arrays reduced by XLA on the CPU). A side declares it
in its memstate (`"precision": {"matmul": "tf32"}`, `{"storage": "bfloat16"}`) or the command line states it
(`--precision-b tf32`, `--precision-b bfloat16-storage`); the noise model then bounds that side by its
own rounding (docs/comparing.md, "Reduced precision")."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# format -> (unit roundoff, the absolute error of a value that underflows it: half its smallest subnormal)
FORMATS = {
    "float32": (0.0, 0.0),  # nothing beyond the dtype's own rounding
    "tf32": (2.0 ** -11, 2.0 ** -127),  # 10 stored significand bits, float32's exponent range
    "bfloat16": (2.0 ** -8, 2.0 ** -134),  # 7 stored bits, float32's range
    "float16": (2.0 ** -11, 2.0 ** -25),  # 10 stored bits, smallest subnormal 2^-24
}
FIELDS = {"matmul": ("float32", "tf32", "bfloat16", "float16"), "storage": ("float32", "bfloat16", "float16"),
          "accumulate": ("float32", "bfloat16", "float16")}
# the names --precision-a/-b take, and what each declares
MODES = {"float32": {}, "tf32": {"matmul": "tf32"}, "bfloat16": {"matmul": "bfloat16"},
         "float16": {"matmul": "float16"}, "bfloat16-storage": {"storage": "bfloat16"},
         "float16-storage": {"storage": "float16"},
         # torch.autocast's bfloat16: matmuls on rounded operands, their results in bfloat16, the rest in
         # float32 with float32 weights; judged as bfloat16 matmuls and storage, of which it does less
         "bfloat16-autocast": {"matmul": "bfloat16", "storage": "bfloat16"},
         # the same in float16, trained with a loss scale: the side records it (records.LOSS_SCALE) and its
         # gradient records are read divided by it
         "float16-autocast": {"matmul": "float16", "storage": "float16"},
         # every op in the half-precision dtype, its sums accumulated in it too (JAX's bfloat16 arrays, which
         # XLA on the CPU reduces in bfloat16), with float32 master weights and optimizer
         "bfloat16-compute": {"storage": "bfloat16", "accumulate": "bfloat16"},
         "float16-compute": {"storage": "float16", "accumulate": "float16"}}
WHAT = {"tf32": "TF32 (operands rounded to 11 significant bits, accumulated in float32)",
        "bfloat16": "bfloat16 (operands rounded to 8 significant bits, accumulated in float32)",
        "float16": "float16 (operands rounded to 11 significant bits and float16's range, accumulated in float32)"}


@dataclass(frozen=True)
class Precision:
    """A side's arithmetic beyond its dtype: its matmuls' operands, and the format every tensor is kept in."""

    matmul: str = "float32"
    storage: str = "float32"
    accumulate: str = "float32"  # the format a sum's running total is kept in

    @classmethod
    def of(cls, value: Any) -> Precision:
        """From a manifest's or header's `precision` (checked already; None: full precision)."""
        return cls(**value) if isinstance(value, dict) else cls()

    @property
    def operand(self) -> tuple[float, float]:
        """(relative, absolute) rounding of a matmul operand, as FORMATS holds it."""
        return FORMATS[self.matmul]

    @property
    def stored(self) -> tuple[float, float]:
        """(relative, absolute) rounding of every value the side keeps."""
        return FORMATS[self.storage]

    @property
    def summed(self) -> float:
        """The unit roundoff of each addition of a sum (0: float32's own)."""
        return FORMATS[self.accumulate][0]

    @property
    def reduced(self) -> bool:
        return (self.matmul, self.storage, self.accumulate) != ("float32",) * 3

    @property
    def mode(self) -> str:
        """Its name as --precision-a/-b takes it."""
        fields = {k: v for k, v in (("matmul", self.matmul), ("storage", self.storage),
                                    ("accumulate", self.accumulate)) if v != "float32"}
        return next((name for name, f in MODES.items() if f == fields), "+".join(f"{k}={v}" for k, v in fields.items()))

    def describe(self, label: str, z_sigma: float) -> str:
        said = []
        if self.matmul != "float32":
            floor = z_sigma * (2 / 3) ** 0.5 * self.operand[0]  # Z sigma of two operands' uniform rounding
            said.append(f"{label} computes its matmuls in {WHAT[self.matmul]}: a change at a matmul below about "
                        f"{floor:.2g} of the root-sum-square of its products cannot be told from that rounding")
        if self.storage != "float32":
            said.append(f"{label} keeps every tensor in {self.storage} ({self.stored[0]:.2g} relative): each op is "
                        f"judged at that unit roundoff, so a change below a few times it cannot be told from "
                        f"rounding")
        if self.accumulate != "float32":
            said.append(f"{label} accumulates its sums in {self.accumulate} ({self.summed:.2g} relative at each "
                        f"addition): a change at a sum below that many times its terms' total cannot be told from "
                        f"rounding")
        return "; ".join(said) + ", and each record's bound downstream carries it"


def check_precision(value: Any) -> str | None:
    """Why a `precision` field is wrong; None when it is right."""
    if not isinstance(value, dict) or not value:
        return f"must be an object like {{\"matmul\": \"tf32\"}}, got {str(value)[:60]}"
    for key, mode in value.items():
        if key not in FIELDS:
            return f"has the key {key!r}; expected one of {', '.join(FIELDS)}"
        if mode not in FIELDS[key]:
            return f"{key!r} is {str(mode)[:40]!r}; expected one of {', '.join(FIELDS[key])}"
    return None
