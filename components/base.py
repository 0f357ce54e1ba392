"""What every component shares: the project image they run in.

The image comes from the project config (``TAXIFARE_IMAGE`` or ``image:`` in taxifare.yaml), so the
compiled spec references the image that `make image` built and `make push` published. Components
run with ``install_kfp_package=False`` because kfp is already in that image (and in the local venv).
"""

from trainer.config import load_settings

BASE_IMAGE = load_settings().image
