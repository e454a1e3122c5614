"""Test-wide settings: every compile in the tests verifies the graph after each pass and
proves the memory plan has no overlapping live buffers."""
import os

os.environ.setdefault("CNNCOMP_VERIFY", "1")
