"""What every component shares: the project image they run in.

The image's repository comes from the project config (``TAXIFARE_IMAGE`` or ``image:`` in
taxifare.yaml) and its tag from the code (``components.fingerprint.image_reference``), so the
compiled spec names exactly the image `make image` builds and `make push` publishes from this code,
and any code change names a new image. Components run with ``install_kfp_package=False`` because
kfp is already in that image (and in the local venv).
"""

from components.fingerprint import image_reference
from trainer.config import load_settings

BASE_IMAGE = image_reference(load_settings().image)
