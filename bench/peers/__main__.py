"""``python -m bench.peers``: the platform beside its peers (:mod:`bench.peers.compare`)."""

import sys

from bench.peers.compare import main

sys.exit(main())
