/* TEST-ONLY stand-in for bcryptprimitives.dll's ProcessPrng, which Wine 8 lacks (the Rust
 * crates under cryptography and bcrypt import it). It fills the buffer from RtlGenRandom
 * (advapi32's SystemFunction036). Built by scripts/build-wine-python into the Wine test
 * prefix's system directory only: never shipped, never installed; real Windows 10+ has the
 * genuine DLL. */
#include <windows.h>

BOOLEAN WINAPI SystemFunction036(PVOID buffer, ULONG length);

__declspec(dllexport) BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T length)
{
    while (length > 0) {
        ULONG chunk = length > 0x10000000 ? 0x10000000 : (ULONG)length;
        if (!SystemFunction036(data, chunk))
            return FALSE;
        data += chunk;
        length -= chunk;
    }
    return TRUE;
}
