#!/bin/sh
# Entrypoints of the project image.
#   train [trainer flags]   python -m trainer.task (the lab's flags; TF_CONFIG for multi-worker)
#   serve [server flags]    python -m trainer.server on 0.0.0.0, port $AIP_HTTP_PORT (default 8080),
#                           model from $AIP_STORAGE_URI (Vertex AI's custom-container contract)
#   anything else           run as given (KFP launches components with their own command line)
set -e
case "${1:-serve}" in
  train)
    [ "$#" -gt 0 ] && shift
    exec python -m trainer.task "$@"
    ;;
  serve)
    [ "$#" -gt 0 ] && shift
    exec python -m trainer.server --host 0.0.0.0 "$@"
    ;;
  *)
    exec "$@"
    ;;
esac
