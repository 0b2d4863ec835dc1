// Shared helpers for every op family: the host/device qualifier for shared math, and (host code,
// .cpp and the host side of .cu) the LibTorch stable ABI as this package uses it
// (stable_abi.h; docs/design.md, stable-ABI rules).
#pragma once

#include "host_device.h"
#include "stable_abi.h"
