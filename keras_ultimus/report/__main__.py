"""`python -m keras_ultimus.report`: see `keras_ultimus.report.cli`."""

from keras_ultimus.report.cli import main

raise SystemExit(main())
