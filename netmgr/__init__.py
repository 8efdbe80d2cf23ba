"""netmgr: a wire-compatible successor of the MSL-Network 1.0 Network Manager."""

__version__ = "0.1.0"
