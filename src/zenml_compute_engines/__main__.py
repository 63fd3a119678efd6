"""`python -m zenml_compute_engines register`: the same as `zenml-compute-engines register`."""

import sys

from zenml_compute_engines.cli import main

sys.exit(main())
