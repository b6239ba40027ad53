"""``python -m synthetic --out DIR --train N --eval M --seed S``: write an INSTANCE-layout dataset."""

import sys

from synthetic.dataset import main

sys.exit(main())
