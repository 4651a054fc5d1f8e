/* A stand-in for pdh.dll whose every call fails, as performance counters do on a host
 * whose counter registry is damaged. Wine 8.0's PdhEnumObjectsA is an unimplemented
 * stub that aborts the calling process, and sysinfo calls it when its first CPU counter
 * could not be added; with this stand-in (loaded for the collector's exe only, through
 * a DllOverrides entry) no counter is ever opened, and the Windows test stage also
 * proves that failing counters leave the collector running. Never shipped. */
#include <windows.h>

#define PDH_CSTATUS_NO_OBJECT ((LONG)0xC0000BB8L)

LONG WINAPI PdhOpenQueryA(LPCSTR source, DWORD_PTR user, HANDLE *query) {
    (void)source; (void)user; *query = NULL; return PDH_CSTATUS_NO_OBJECT;
}
LONG WINAPI PdhAddEnglishCounterA(HANDLE q, LPCSTR path, DWORD_PTR u, HANDLE *c) {
    (void)q; (void)path; (void)u; *c = NULL; return PDH_CSTATUS_NO_OBJECT;
}
LONG WINAPI PdhAddEnglishCounterW(HANDLE q, LPCWSTR path, DWORD_PTR u, HANDLE *c) {
    (void)q; (void)path; (void)u; *c = NULL; return PDH_CSTATUS_NO_OBJECT;
}
LONG WINAPI PdhCloseQuery(HANDLE q) { (void)q; return 0; }
LONG WINAPI PdhRemoveCounter(HANDLE c) { (void)c; return 0; }
LONG WINAPI PdhCollectQueryData(HANDLE q) { (void)q; return PDH_CSTATUS_NO_OBJECT; }
LONG WINAPI PdhCollectQueryDataEx(HANDLE q, DWORD i, HANDLE e) {
    (void)q; (void)i; (void)e; return PDH_CSTATUS_NO_OBJECT;
}
LONG WINAPI PdhEnumObjectsA(LPCSTR s, LPCSTR m, LPSTR list, LPDWORD len, DWORD d, BOOL r) {
    (void)s; (void)m; (void)list; (void)d; (void)r; if (len) *len = 0;
    return PDH_CSTATUS_NO_OBJECT;
}
LONG WINAPI PdhGetFormattedCounterValue(HANDLE c, DWORD f, LPDWORD t, void *v) {
    (void)c; (void)f; (void)t; (void)v; return PDH_CSTATUS_NO_OBJECT;
}
