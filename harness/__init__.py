"""memstate: find where two implementations of the 784-H-10 MNIST network part ways."""

__version__ = "0.1.0"
