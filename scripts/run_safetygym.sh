#!/usr/bin/env bash
# The protocol sweep on Safety-Gymnasium (navigation and velocity tasks); see run_bullet.sh.
SUITE="safety_gymnasium velocity" exec "$(dirname "${BASH_SOURCE[0]}")/run_bullet.sh" "$@"
