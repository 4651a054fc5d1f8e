/* A stand-in for bcryptprimitives.dll, which Wine 8.0 lacks: Rust's standard library
 * (1.78 and later) imports ProcessPrng from it on Windows. Used by the Windows test
 * stage only, never shipped: real Windows 10 and Server 2016 and later have the DLL. */
#include <windows.h>
#include <bcrypt.h>

BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T len) {
    while (len > 0) {
        ULONG chunk = len > 0x40000000 ? 0x40000000 : (ULONG)len;
        if (BCryptGenRandom(NULL, data, chunk, BCRYPT_USE_SYSTEM_PREFERRED_RNG) != 0) {
            return FALSE;
        }
        data += chunk;
        len -= chunk;
    }
    return TRUE;
}
