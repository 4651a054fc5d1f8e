/* Stand-ins for `netsh` and `wevtutil`, whose Wine 8.0 versions print nothing useful
 * (`netsh winhttp show proxy` and `wevtutil qe` are not emulated), and for
 * `eventcreate`, which Wine lacks. Copied beside the collector's exe as netsh.exe,
 * wevtutil.exe and eventcreate.exe on the Windows test stage's Wine host, where
 * Windows' search order finds them first. netsh and wevtutil print the file the test
 * wrote for them (C:\connwatch-test\<name>.out), else what the real tool prints on a
 * host with no proxy set and an empty event channel; eventcreate appends its command
 * line to C:\connwatch-test\eventcreate.log, so the test can read what was logged. */
#include <windows.h>
#include <stdio.h>
#include <string.h>

int main(int argc, char **argv) {
    (void)argc;
    char module[MAX_PATH];
    GetModuleFileNameA(NULL, module, MAX_PATH);
    if (strstr(module, "eventcreate")) {
        FILE *log = fopen("C:\\connwatch-test\\eventcreate.log", "ab");
        if (!log) return 1;
        fprintf(log, "%s\r\n", GetCommandLineA());
        fclose(log);
        return 0;
    }
    int netsh = strstr(module, "netsh") != NULL;
    char path[MAX_PATH];
    snprintf(path, sizeof path, "C:\\connwatch-test\\%s.out", netsh ? "netsh" : "wevtutil");
    FILE *f = fopen(path, "rb");
    if (!f) {
        fputs(netsh ? "\r\nCurrent WinHTTP proxy settings:\r\n\r\n    Direct access (no proxy server).\r\n\r\n"
                    : "<Events></Events>", stdout);
        return 0;
    }
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0) fwrite(buf, 1, n, stdout);
    fclose(f);
    (void)argv;
    return 0;
}
