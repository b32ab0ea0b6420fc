"""``python -m wealthai_client``: the ``wealthai`` command line."""

from wealthai_client.cli import main

main()
