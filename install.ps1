# usepod-agent installer for Windows: `irm https://usepod.ai/install.ps1 | iex` (PowerShell 5.1 or 7).
# Same behaviour as install.sh: download usepod-agent-windows-x64.exe and its .sha256, verify with
# Get-FileHash, install atomically to $env:LOCALAPPDATA\usepod-agent\bin, add it to the user PATH.
# UNTESTED HERE: no Windows machine or PowerShell runs this repository's tests; install.sh is the tested one.
#
# Environment (all optional), as for install.sh:
#   USEPOD_VERSION   release tag to install, e.g. v0.4.0 (default: the tag in $USEPOD_BASE_URL/agent-latest)
#   USEPOD_BASE_URL  site holding the agent-latest pointer (default: https://usepod.ai)
#   USEPOD_REPO      release download base; assets are at $USEPOD_REPO/<tag>/<asset>
#                    (default: https://github.com/usepod/usepod-agent/releases/download)
#   USEPOD_PREFIX    install prefix; the binary goes to $USEPOD_PREFIX\bin (default: $env:LOCALAPPDATA\usepod-agent)

# Used when the latest pointer cannot be read; keep equal to install.sh's FALLBACK_VERSION.
$UsepodFallbackVersion = 'v0.4.0'

# Errors are thrown, never `exit`: under `iex` an exit would close the user's PowerShell window.
function Install-UsepodAgent {
  $ErrorActionPreference = 'Stop'
  $ProgressPreference = 'SilentlyContinue' # the progress bar makes Invoke-WebRequest very slow on 5.1
  Set-StrictMode -Version Latest
  # Windows PowerShell 5.1 may still default to TLS 1.0, which GitHub refuses.
  [Net.ServicePointManager]::SecurityProtocol = [Net.ServicePointManager]::SecurityProtocol -bor
    [Net.SecurityProtocolType]::Tls12

  function Say([string]$Message) { Write-Host "usepod-agent install: $Message" }
  function Warn([string]$Message) { Write-Warning "usepod-agent install: $Message" }
  function Fail([string]$Message) { throw "usepod-agent install: error: $Message" }
  function Get-Url([string]$Url, [string]$File) {
    Invoke-WebRequest -Uri $Url -OutFile $File -UseBasicParsing
  }
  function Test-Tag([string]$Tag) { $Tag -match '^[A-Za-z0-9._-]+$' }

  $baseUrl = if ($env:USEPOD_BASE_URL) { $env:USEPOD_BASE_URL.TrimEnd('/') } else { 'https://usepod.ai' }
  $repo = if ($env:USEPOD_REPO) { $env:USEPOD_REPO.TrimEnd('/') } else {
    'https://github.com/usepod/usepod-agent/releases/download'
  }
  $prefix = if ($env:USEPOD_PREFIX) { $env:USEPOD_PREFIX } else {
    Join-Path $env:LOCALAPPDATA 'usepod-agent'
  }
  $binDir = Join-Path $prefix 'bin'
  $target = Join-Path $binDir 'usepod-agent.exe'

  # Only x64 is built; Windows 11 on Arm runs it under x64 emulation.
  $arch = if ($env:PROCESSOR_ARCHITEW6432) { $env:PROCESSOR_ARCHITEW6432 } else { $env:PROCESSOR_ARCHITECTURE }
  switch ($arch) {
    'AMD64' { }
    'ARM64' { Warn 'no native Arm64 build yet; installing the x64 build, which runs under emulation on Windows 11' }
    default { Fail "unsupported CPU architecture: $arch (usepod-agent for Windows is built for x64)" }
  }
  $asset = 'usepod-agent-windows-x64.exe'

  $tmp = Join-Path ([IO.Path]::GetTempPath()) ("usepod-agent-" + [Guid]::NewGuid().ToString('N'))
  New-Item -ItemType Directory -Path $tmp | Out-Null
  $staged = $null
  try {
    if ($env:USEPOD_VERSION) {
      $tag = if ($env:USEPOD_VERSION.StartsWith('v')) { $env:USEPOD_VERSION } else { "v$($env:USEPOD_VERSION)" }
      if (-not (Test-Tag $tag)) { Fail "USEPOD_VERSION is not a release tag: $($env:USEPOD_VERSION)" }
    } else {
      $pointer = "$baseUrl/agent-latest"
      $tag = $null
      try {
        Get-Url $pointer (Join-Path $tmp 'agent-latest')
        $tag = "$(Get-Content -Path (Join-Path $tmp 'agent-latest') -TotalCount 1)".Trim()
        if (-not (Test-Tag $tag)) {
          Warn "$pointer does not hold a release tag; installing built-in $UsepodFallbackVersion"
          $tag = $null
        }
      } catch {
        Warn "could not read $pointer; installing built-in $UsepodFallbackVersion"
      }
      if (-not $tag) { $tag = $UsepodFallbackVersion }
    }

    $url = "$repo/$tag/$asset"
    $download = Join-Path $tmp $asset
    Say "downloading $asset $tag from $url"
    try { Get-Url $url $download } catch {
      Fail "download failed: $url ($($_.Exception.Message)); is $tag a published release with a Windows asset?"
    }
    try { Get-Url "$url.sha256" "$download.sha256" } catch {
      Fail "download failed: $url.sha256 ($($_.Exception.Message))"
    }

    # The .sha256 file is in `sha256sum -c` format: "<hex>  <asset name>".
    $expected = ("$(Get-Content -Path "$download.sha256" -TotalCount 1)".Trim() -split '\s+')[0].ToLowerInvariant()
    if ($expected -notmatch '^[0-9a-f]{64}$') { Fail "$url.sha256 is not a SHA-256 checksum file" }
    $actual = (Get-FileHash -Algorithm SHA256 -Path $download).Hash.ToLowerInvariant()
    if ($actual -ne $expected) {
      Fail "checksum mismatch for $asset ${tag}: expected $expected, got $actual; nothing was installed"
    }
    Say "checksum verified ($actual)"

    if (Test-Path -Path $target -PathType Container) { Fail "$target is a directory; remove it or set USEPOD_PREFIX" }
    New-Item -ItemType Directory -Force -Path $binDir | Out-Null
    # Write beside the target and rename over it: the old binary stays whole until the new one is in place.
    $staged = Join-Path $binDir ".usepod-agent.tmp.$PID.exe"
    Copy-Item -Path $download -Destination $staged -Force
    $old = "$target.old"
    if (Test-Path $old) { Remove-Item -Path $old -Force -ErrorAction SilentlyContinue }
    if (Test-Path $target) {
      try {
        [IO.File]::Replace($staged, $target, [NullString]::Value)
      } catch {
        # A running executable (the service) cannot be replaced but can be renamed; move it aside.
        [IO.File]::Move($target, $old)
        try { [IO.File]::Move($staged, $target) } catch { [IO.File]::Move($old, $target); throw }
        Warn "the running usepod-agent was moved to $old; restart it to run $tag"
      }
    } else {
      [IO.File]::Move($staged, $target)
    }
    $staged = $null
    Say "installed usepod-agent $tag to $target"
  } finally {
    if ($staged -and (Test-Path $staged)) { Remove-Item -Path $staged -Force -ErrorAction SilentlyContinue }
    Remove-Item -Path $tmp -Recurse -Force -ErrorAction SilentlyContinue
  }

  $versionLine = $null
  try { $versionLine = & $target version } catch { }
  if ($versionLine -and $LASTEXITCODE -eq 0) { Say "$versionLine" } else {
    Warn "$target was installed but ``$target version`` failed; check that it matches this machine"
  }

  # The user PATH is read and written raw so entries like %USERPROFILE%\bin keep their variables.
  $key = [Microsoft.Win32.Registry]::CurrentUser.OpenSubKey('Environment', $true)
  try {
    $raw = [string]$key.GetValue('Path', '', [Microsoft.Win32.RegistryValueOptions]::DoNotExpandEnvironmentNames)
    $entries = @($raw -split ';' | Where-Object { $_ })
    if (-not ($entries | Where-Object { $_.TrimEnd('\') -ieq $binDir.TrimEnd('\') })) {
      $key.SetValue('Path', (($entries + $binDir) -join ';'), [Microsoft.Win32.RegistryValueKind]::ExpandString)
      # Setting a user variable through .NET broadcasts the change, so new terminals see the PATH.
      [Environment]::SetEnvironmentVariable('USEPOD_AGENT_PATH_REFRESH', '1', 'User')
      [Environment]::SetEnvironmentVariable('USEPOD_AGENT_PATH_REFRESH', $null, 'User')
      Say "added $binDir to your user PATH (open a new terminal to use it)"
    }
  } finally {
    $key.Close()
  }
  if (-not (($env:Path -split ';') | Where-Object { $_.TrimEnd('\') -ieq $binDir.TrimEnd('\') })) {
    $env:Path = "$env:Path;$binDir"
  }

  Write-Host @"

Next steps:
  1. usepod-agent setup
       writes a config and an identity key for this machine
  2. usepod-agent --config C:\path\to\agent.toml
       starts the agent with that config
  3. open http://127.0.0.1:9090/status
       shows the agent's status, backends and jobs
"@
}

Install-UsepodAgent
