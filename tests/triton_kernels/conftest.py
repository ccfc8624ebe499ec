"""The Triton kernel tests run on the CPU in Triton's interpreter; the
top-level tests/conftest.py sets TRITON_INTERPRET=1 before triton is first
imported."""
