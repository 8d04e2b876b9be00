"""beatgans' Hydra config tree, shipped as package data and found by Hydra as `pkg://beatgans.conf`.

A package (not a bare directory) so that importlib, and with it Hydra's package search path, can locate it
wherever beatgans is installed. It holds YAML only; nothing here is meant to be imported.
"""
