"""Test helpers shared by the test modules: fake servers and hardware, run harnesses, result checks."""
