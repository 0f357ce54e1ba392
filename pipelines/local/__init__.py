"""What runs only on this machine: the local pipeline run, the GCS emulator, the local sweep."""
