# Headers whose presence is tested; each gives NV_<PATH>_PRESENT in conftest/headers.h.
NV_HEADER_PRESENCE_TESTS = \
  generated/autoconf.h \
  linux/mm_types.h \
  asm/system.h
