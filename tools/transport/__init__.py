"""Getting a driver's inputs onto a lent machine and its results back: data parts, wheels, earlier results, packing.

Stdlib only at import (the lent machine has no Keras until the wheels are in), and nothing from `benchmarks/`.
"""
