"""What talks to Google Cloud or a KFP cluster from the workstation: submit, sweeps, GCP setup."""
