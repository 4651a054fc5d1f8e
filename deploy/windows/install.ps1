<#
.SYNOPSIS
  Installs (or upgrades) the connwatch collector as a Windows service on this host or,
  with -ComputerName, on many hosts over PowerShell remoting, unattended.

.DESCRIPTION
  For each host: copies connwatch-collector.exe to C:\Program Files\connwatch, the CA
  and the host's own certificate and key to C:\ProgramData\connwatch\certs (as
  collector.pem/collector.key), the config to C:\ProgramData\connwatch\collector.toml
  (kept if one is there, unless -ReplaceConfig); restricts those folders (keys readable
  by Administrators, SYSTEM and the service account only; the spool and log folders
  writable by the service account); adds the account to "Event Log Readers" so it can
  read the connector's event log; checks the config with --check-config; registers
  the service with `service install`, starts it, and runs `probe` so the output shows
  what the host reports. Running it again upgrades the binary in place.

  Certificates come from the aggregator host:
    connwatch-aggregator ca issue --dir <ca folder> --role collector --name <connector id> --out <CertDir>
  which writes collector-<id>.pem and collector-<id>.key. The connector id is the
  host's short name unless -ConnectorId maps it.

.EXAMPLE
  .\install.ps1 -Exe .\connwatch-collector.exe -Config .\collector.toml -CertDir .\certs
.EXAMPLE
  .\install.ps1 -ComputerName conn-eu-01,conn-eu-02 -Exe .\connwatch-collector.exe -Config .\collector.toml -CertDir .\certs
#>
[CmdletBinding()]
param(
    [Parameter(Mandatory)] [string] $Exe,
    [Parameter(Mandatory)] [string] $Config,
    # Holds ca.pem and collector-<id>.pem/.key for every host.
    [Parameter(Mandatory)] [string] $CertDir,
    [string[]] $ComputerName = @($env:COMPUTERNAME),
    # Host name -> connector id, where they differ.
    [hashtable] $ConnectorId = @{},
    # NetworkService by default; LocalSystem where the certificate stores are locked down.
    [string] $Account = 'NT AUTHORITY\NetworkService',
    [switch] $ReplaceConfig
)
$ErrorActionPreference = 'Stop'
Set-StrictMode -Version Latest

$programFiles = 'C:\Program Files\connwatch'
$programData = 'C:\ProgramData\connwatch'

function Install-OnHost {
    param([string] $Computer, [System.Management.Automation.Runspaces.PSSession] $Session)
    $id = if ($ConnectorId.ContainsKey($Computer)) { $ConnectorId[$Computer] } else { $Computer.Split('.')[0].ToLowerInvariant() }
    $files = @{
        Ca   = Join-Path $CertDir 'ca.pem'
        Cert = Join-Path $CertDir "collector-$id.pem"
        Key  = Join-Path $CertDir "collector-$id.key"
    }
    foreach ($f in $files.Values + @($Exe, $Config)) {
        if (-not (Test-Path -LiteralPath $f)) { throw "${Computer}: $f is missing (issue it with ``connwatch-aggregator ca issue --role collector --name $id``)" }
    }
    $copy = if ($Session) { @{ ToSession = $Session } } else { @{} }
    $run = {
        param($step, $programFiles, $programData, $account, $replace)
        switch ($step) {
            'prepare' {
                $svc = Get-Service -Name 'connwatch-collector' -ErrorAction SilentlyContinue
                if ($svc -and $svc.Status -ne 'Stopped') { & "$programFiles\connwatch-collector.exe" service stop | Out-Host }
                New-Item -ItemType Directory -Force -Path $programFiles, "$programData\certs", "$programData\spool", "$programData\logs", "$programData\incoming" | Out-Null
            }
            'finish' {
                $incoming = "$programData\incoming"
                Move-Item -Force "$incoming\connwatch-collector.exe" "$programFiles\connwatch-collector.exe"
                foreach ($f in 'ca.pem', 'collector.pem', 'collector.key') { Move-Item -Force "$incoming\$f" "$programData\certs\$f" }
                if ($replace -or -not (Test-Path "$programData\collector.toml")) { Move-Item -Force "$incoming\collector.toml" "$programData\collector.toml" }
                Remove-Item -Recurse -Force $incoming
                # Certificates and config: read for the service account, change for admins only.
                icacls "$programData\certs" /inheritance:r /grant:r 'Administrators:(OI)(CI)F' 'SYSTEM:(OI)(CI)F' "${account}:(OI)(CI)R" | Out-Null
                icacls "$programData\collector.toml" /inheritance:r /grant:r 'Administrators:F' 'SYSTEM:F' "${account}:R" | Out-Null
                foreach ($d in 'spool', 'logs') { icacls "$programData\$d" /grant "${account}:(OI)(CI)M" | Out-Null }
                if ($account -notin 'LocalSystem', 'NT AUTHORITY\SYSTEM') {
                    Add-LocalGroupMember -Group 'Event Log Readers' -Member $account -ErrorAction SilentlyContinue
                }
                $exe = "$programFiles\connwatch-collector.exe"
                & $exe run --config "$programData\collector.toml" --check-config
                if ($LASTEXITCODE -ne 0) { throw "the config does not check out" }
                if (-not (Get-Service -Name 'connwatch-collector' -ErrorAction SilentlyContinue)) {
                    & $exe service install --config "$programData\collector.toml" --account $account --log-dir "$programData\logs"
                    if ($LASTEXITCODE -ne 0) { throw "service install failed" }
                }
                & $exe service start
                if ($LASTEXITCODE -ne 0) { throw "service start failed; see $programData\logs\collector.log" }
                & $exe --version
                & $exe probe --config "$programData\collector.toml"
            }
        }
    }
    $invoke = {
        param($step)
        $a = @($step, $programFiles, $programData, $Account, [bool]$ReplaceConfig)
        if ($Session) { Invoke-Command -Session $Session -ScriptBlock $run -ArgumentList $a } else { & $run @a }
    }
    & $invoke 'prepare'
    $incoming = "$programData\incoming"
    Copy-Item @copy -LiteralPath $Exe -Destination "$incoming\connwatch-collector.exe"
    Copy-Item @copy -LiteralPath $Config -Destination "$incoming\collector.toml"
    Copy-Item @copy -LiteralPath $files.Ca -Destination "$incoming\ca.pem"
    Copy-Item @copy -LiteralPath $files.Cert -Destination "$incoming\collector.pem"
    Copy-Item @copy -LiteralPath $files.Key -Destination "$incoming\collector.key"
    & $invoke 'finish'
}

$failed = @()
foreach ($computer in $ComputerName) {
    Write-Host "== $computer"
    $session = $null
    try {
        if ($computer -ne $env:COMPUTERNAME) { $session = New-PSSession -ComputerName $computer }
        Install-OnHost -Computer $computer -Session $session
    } catch {
        Write-Warning "${computer}: $_"
        $failed += $computer
    } finally {
        if ($session) { Remove-PSSession $session }
    }
}
if ($failed) { Write-Error "failed on: $($failed -join ', ')"; exit 1 }
Write-Host "installed on $($ComputerName.Count) host(s)"
