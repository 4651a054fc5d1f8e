/* Puts a DER certificate where a connector's trust certificate lives, for the Windows
 * test stage's Wine host:
 *   certimport.exe machine FILE         LocalMachine\My, through crypt32's store API
 *   certimport.exe networkservice FILE  the Network Service account's My store, as
 *       Windows keeps it: the serialized element under HKEY_USERS\S-1-5-20 (Wine has
 *       no Network Service profile whose store crypt32 could open)
 *   certimport.exe remove THUMBPRINT    takes it out of both again
 * Prints the certificate's SHA-1 thumbprint in upper-case hex. */
#include <windows.h>
#include <wincrypt.h>
#include <stdio.h>

static BYTE *read_file(const wchar_t *path, DWORD *len) {
    HANDLE f = CreateFileW(path, GENERIC_READ, FILE_SHARE_READ, NULL, OPEN_EXISTING, 0, NULL);
    if (f == INVALID_HANDLE_VALUE) return NULL;
    DWORD size = GetFileSize(f, NULL);
    BYTE *buf = HeapAlloc(GetProcessHeap(), 0, size);
    if (!buf || !ReadFile(f, buf, size, len, NULL)) buf = NULL;
    CloseHandle(f);
    return buf;
}

static void thumbprint(PCCERT_CONTEXT cert, wchar_t *out) {
    BYTE hash[20];
    DWORD n = sizeof hash;
    CertGetCertificateContextProperty(cert, CERT_SHA1_HASH_PROP_ID, hash, &n);
    for (DWORD i = 0; i < n; i++) swprintf(out + 2 * i, 3, L"%02X", hash[i]);
}

static const wchar_t *NS_STORE = L"S-1-5-20\\Software\\Microsoft\\SystemCertificates\\My\\Certificates\\";

int wmain(int argc, wchar_t **argv) {
    if (argc != 3) {
        fwprintf(stderr, L"usage: certimport machine|networkservice FILE | remove THUMBPRINT\n");
        return 2;
    }
    if (!wcscmp(argv[1], L"remove")) {
        wchar_t key[256];
        swprintf(key, 256, L"%ls%ls", NS_STORE, argv[2]);
        RegDeleteTreeW(HKEY_USERS, key);
        swprintf(key, 256, L"Software\\Microsoft\\SystemCertificates\\MY\\Certificates\\%ls", argv[2]);
        RegDeleteTreeW(HKEY_LOCAL_MACHINE, key);
        return 0;
    }
    DWORD len = 0;
    BYTE *der = read_file(argv[2], &len);
    if (!der) { fwprintf(stderr, L"cannot read %ls\n", argv[2]); return 1; }
    PCCERT_CONTEXT cert = CertCreateCertificateContext(X509_ASN_ENCODING, der, len);
    if (!cert) { fwprintf(stderr, L"not a DER certificate: %ls\n", argv[2]); return 1; }
    wchar_t thumb[41] = {0};
    thumbprint(cert, thumb);
    if (!wcscmp(argv[1], L"machine")) {
        HCERTSTORE store = CertOpenStore(CERT_STORE_PROV_SYSTEM_W, 0, 0,
                                         CERT_SYSTEM_STORE_LOCAL_MACHINE, L"MY");
        if (!store || !CertAddCertificateContextToStore(store, cert, CERT_STORE_ADD_REPLACE_EXISTING, NULL)) {
            fwprintf(stderr, L"cannot add to LocalMachine\\My: error %lu\n", GetLastError());
            return 1;
        }
        CertCloseStore(store, 0);
    } else if (!wcscmp(argv[1], L"networkservice")) {
        DWORD size = 0;
        CertSerializeCertificateStoreElement(cert, 0, NULL, &size);
        BYTE *blob = HeapAlloc(GetProcessHeap(), 0, size);
        if (!blob || !CertSerializeCertificateStoreElement(cert, 0, blob, &size)) {
            fwprintf(stderr, L"cannot serialize: error %lu\n", GetLastError());
            return 1;
        }
        wchar_t key[256];
        swprintf(key, 256, L"%ls%ls", NS_STORE, thumb);
        HKEY k;
        if (RegCreateKeyExW(HKEY_USERS, key, 0, NULL, 0, KEY_WRITE, NULL, &k, NULL) ||
            RegSetValueExW(k, L"Blob", 0, REG_BINARY, blob, size)) {
            fwprintf(stderr, L"cannot write HKEY_USERS\\%ls\n", key);
            return 1;
        }
        RegCloseKey(k);
    } else {
        fwprintf(stderr, L"unknown store %ls\n", argv[1]);
        return 2;
    }
    wprintf(L"%ls\n", thumb);
    return 0;
}
