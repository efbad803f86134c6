#pragma once

#if defined(_WIN32)
#if defined(LINATTN_BUILDING_LIBRARY)
#define LINATTN_API __declspec(dllexport)
#else
#define LINATTN_API __declspec(dllimport)
#endif
#else
#define LINATTN_API __attribute__((visibility("default")))
#endif
