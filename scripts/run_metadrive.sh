#!/usr/bin/env bash
# The protocol sweep on the MetaDrive tasks; see run_bullet.sh.
SUITE=metadrive exec "$(dirname "${BASH_SOURCE[0]}")/run_bullet.sh" "$@"
