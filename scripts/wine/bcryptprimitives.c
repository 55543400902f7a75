/*
 * A stand-in for Windows' bcryptprimitives.dll, for running Go's Windows
 * test binaries under Wine (scripts/test-windows.sh). Never shipped.
 *
 * Every Go >= 1.22 Windows binary loads bcryptprimitives.dll at start for
 * ProcessPrng, its source of random bytes; Wine 8.0 (Debian 12) has no such
 * DLL, so the runtime dies with "bcryptprimitives.dll not found". This DLL
 * exports ProcessPrng and fills the buffer through advapi32's
 * SystemFunction036 (RtlGenRandom), which Wine has.
 *
 * Built by scripts/test-windows.sh with Debian's mingw-w64:
 *   x86_64-w64-mingw32-gcc -shared -O2 -s -o bcryptprimitives.dll \
 *     bcryptprimitives.c bcryptprimitives.def -ladvapi32
 */
#include <windows.h>

/* RtlGenRandom; its documented name is a #define in ntsecapi.h. */
BOOLEAN WINAPI SystemFunction036(PVOID buffer, ULONG length);

/*
 * ProcessPrng fills data with len random bytes and returns TRUE, as the real
 * one does (it never fails). RtlGenRandom takes a ULONG length, so larger
 * requests are filled in pieces.
 */
BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T len)
{
    while (len > 0) {
        ULONG n = len > 0x40000000 ? 0x40000000 : (ULONG)len;
        if (!SystemFunction036(data, n))
            return FALSE;
        data += n;
        len -= n;
    }
    return TRUE;
}
