"""What a side computed its matmuls in: full float32, or with its operands rounded first to TF32,
bfloat16 or float16 and accumulated in float32 (what a GPU's tensor cores do under JAX's default
precision, PyTorch's allow_tf32, or a reduced matmul precision). A side declares it in its memstate
(`"precision": {"matmul": "tf32"}`) or the command line states it (`--precision-b tf32`); the noise
model then bounds that side's matmuls by its own operand rounding (docs/comparing.md, "Precision")."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# matmul precision -> (unit roundoff of an operand, the smallest operand it still holds apart from 0:
# half its smallest subnormal, the absolute error of an operand that underflows)
MATMUL = {
    "float32": (0.0, 0.0),
    "tf32": (2.0 ** -11, 2.0 ** -127),  # 10 stored significand bits, float32's exponent range
    "bfloat16": (2.0 ** -8, 2.0 ** -134),  # 7 stored bits, float32's range
    "float16": (2.0 ** -11, 2.0 ** -25),  # 10 stored bits, smallest subnormal 2^-24
}
FIELDS = {"matmul": MATMUL}
WHAT = {"tf32": "TF32 (operands rounded to 11 significant bits, accumulated in float32)",
        "bfloat16": "bfloat16 (operands rounded to 8 significant bits, accumulated in float32)",
        "float16": "float16 (operands rounded to 11 significant bits and float16's range, accumulated in float32)"}


@dataclass(frozen=True)
class Precision:
    """A side's arithmetic beyond its dtype: the precision of its matmuls' operands."""

    matmul: str = "float32"

    @classmethod
    def of(cls, value: Any) -> Precision:
        """From a manifest's or header's `precision` (checked already; None: full precision)."""
        return cls(**value) if isinstance(value, dict) else cls()

    @property
    def operand(self) -> tuple[float, float]:
        """(relative, absolute) rounding of a matmul operand, as MATMUL holds it."""
        return MATMUL[self.matmul]

    @property
    def reduced(self) -> bool:
        return self.matmul != "float32"

    def floor(self, z_sigma: float) -> float:
        """The smallest change at a matmul its rounding cannot hide, relative to the root-sum-square of
        its products: Z sigma of two operands' uniform rounding, Z * sqrt(2/3) * u."""
        return z_sigma * (2 / 3) ** 0.5 * self.operand[0]

    def describe(self, label: str, z_sigma: float) -> str:
        return (f"{label} computes its matmuls in {WHAT[self.matmul]}: a change at a matmul below about "
                f"{self.floor(z_sigma):.2g} of the root-sum-square of its products cannot be told from that "
                f"rounding, and each record's bound downstream carries it")


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
