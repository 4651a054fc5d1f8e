/* A Windows service that does nothing but run until the service control manager stops
 * it: plays the connector (WAPCSvc) and its updater (WAPCUpdaterSvc) on the Windows
 * test stage's Wine host. Usage: fake-service.exe NAME (as the service's command);
 * fake-service.exe --disable NAME sets NAME's start type to disabled, as services.msc
 * does (Wine's sc has no `config`). */
#include <windows.h>

static SERVICE_STATUS_HANDLE handle;
static SERVICE_STATUS status;
static HANDLE stop_event;
static wchar_t *name;

static void set_state(DWORD state) {
    status.dwServiceType = SERVICE_WIN32_OWN_PROCESS;
    status.dwCurrentState = state;
    status.dwControlsAccepted = state == SERVICE_RUNNING ? SERVICE_ACCEPT_STOP : 0;
    status.dwWin32ExitCode = NO_ERROR;
    SetServiceStatus(handle, &status);
}

static DWORD WINAPI control(DWORD code, DWORD type, LPVOID data, LPVOID context) {
    (void)type; (void)data; (void)context;
    if (code == SERVICE_CONTROL_STOP || code == SERVICE_CONTROL_SHUTDOWN) {
        set_state(SERVICE_STOP_PENDING);
        SetEvent(stop_event);
    }
    return NO_ERROR;
}

static void WINAPI service_main(DWORD argc, LPWSTR *argv) {
    (void)argc; (void)argv;
    handle = RegisterServiceCtrlHandlerExW(name, control, NULL);
    if (!handle) return;
    stop_event = CreateEventW(NULL, TRUE, FALSE, NULL);
    set_state(SERVICE_RUNNING);
    WaitForSingleObject(stop_event, INFINITE);
    set_state(SERVICE_STOPPED);
}

int wmain(int argc, wchar_t **argv) {
    if (argc < 2) return 2;
    if (argc == 3 && !wcscmp(argv[1], L"--disable")) {
        SC_HANDLE scm = OpenSCManagerW(NULL, NULL, SC_MANAGER_CONNECT);
        SC_HANDLE svc = scm ? OpenServiceW(scm, argv[2], SERVICE_CHANGE_CONFIG) : NULL;
        if (!svc || !ChangeServiceConfigW(svc, SERVICE_NO_CHANGE, SERVICE_DISABLED,
                                          SERVICE_NO_CHANGE, NULL, NULL, NULL, NULL,
                                          NULL, NULL, NULL)) {
            return 1;
        }
        return 0;
    }
    name = argv[1];
    SERVICE_TABLE_ENTRYW table[] = {{name, service_main}, {NULL, NULL}};
    return StartServiceCtrlDispatcherW(table) ? 0 : 1;
}
