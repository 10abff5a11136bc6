"""The methods' own parts: networks, losses, update, policies and defaults (LSPC itself is train_lspc_iql.py)."""
