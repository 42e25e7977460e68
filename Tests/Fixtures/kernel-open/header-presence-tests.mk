# Headers whose presence is tested; each gives NV_<PATH>_PRESENT in conftest/headers.h.
NV_HEADER_PRESENCE_TESTS = \
  asm/system.h \
  drm/drmP.h \
  drm/drm_client_setup.h \
  drm/clients/drm_client_setup.h \
  generated/autoconf.h \
  generated/utsrelease.h \
  asm/set_memory.h \
  asm/pgtable_types.h \
  linux/ioasid.h \
  linux/dma-resv.h \
  crypto/sig.h
