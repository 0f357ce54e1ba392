"""What talks to Google Cloud or a KFP cluster from the workstation: submit, sweeps, GCP setup."""

# Where a compiled pipeline runs besides this machine (``taxifare submit --target``).
PLATFORMS = ("vertex", "kfp")
