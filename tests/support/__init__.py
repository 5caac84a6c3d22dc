"""Test and benchmark helpers that are not part of the library.

tests/ is on sys.path in pytest; benchmark scripts add it themselves.
"""
