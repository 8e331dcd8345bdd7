"""The ``foundation`` command line (``python -m foundation``): demo, up, node, status, drain."""
