// Symbol visibility for libpipe: the library is built with hidden visibility,
// so only what is marked PIPE_API is part of its ABI.
#pragma once

#if defined(PIPE_BUILDING_LIBRARY)
#define PIPE_API __attribute__((visibility("default")))
#else
#define PIPE_API
#endif
