"""`python -m pipelines.cli`: the same as the `taxifare` command."""

from pipelines.cli import main

main()
