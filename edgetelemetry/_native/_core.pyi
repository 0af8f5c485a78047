# Types of the cffi module built by build_core.py (private: only binding.py uses it).
# cffi's FFI and Lib objects are dynamic: their attributes are the declarations of
# core_cdef.h, so they are typed as Any; binding.py types what it returns.
from typing import Any

ffi: Any
lib: Any
