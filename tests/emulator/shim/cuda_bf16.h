#pragma once
// Stand-in for the CUDA header of the same name: everything lives in the emulator.
#include "../cuda_emu.h"
