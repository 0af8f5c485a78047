# Types of the cffi module built by build_loops.py (declarations in loops_cdef.h).
from typing import Any

ffi: Any
lib: Any
