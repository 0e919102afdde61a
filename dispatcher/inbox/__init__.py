"""The projects' ``.agent-queue`` directories: listing, reading, markers and atomic task moves.

The filesystem is the truth; this package is the only one that touches it.
"""
