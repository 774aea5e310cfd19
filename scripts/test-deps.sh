#!/usr/bin/env bash
# The system programs the test suite needs besides Python packages:
#   chromium + chromedriver  tests/test_browser.py drives the system's headless Chromium
#   gs (Ghostscript)         Pillow renders EPS through it (the EPS tests)
#   DejaVu fonts             fixtures/ocr.py renders the OCR tests' text with them (and with the
#                            URW base35 fonts Ghostscript brings)
# On Debian/Ubuntu the missing ones are installed with apt-get (sudo when not root);
# elsewhere this prints what to install and exits 1. Nothing to do: exits 0 at once.
set -euo pipefail

declare -A package=([chromium]=chromium [chromedriver]=chromium-driver [gs]=ghostscript)
missing=()
for prog in chromium chromedriver gs; do
    command -v "$prog" >/dev/null 2>&1 || missing+=("${package[$prog]}")
done
dejavu=/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf
[ -e "$dejavu" ] || missing+=(fonts-dejavu-core)
[ ${#missing[@]} -eq 0 ] && exit 0

if ! command -v apt-get >/dev/null 2>&1 || ! command -v dpkg >/dev/null 2>&1; then
    echo "scripts/test-deps.sh: the tests need these programs, not found on PATH:" >&2
    for pkg in "${missing[@]}"; do
        case "$pkg" in
            chromium) echo "  chromium      (Chromium, run headless by tests/test_browser.py)" >&2 ;;
            chromium-driver) echo "  chromedriver  (the ChromeDriver matching that Chromium)" >&2 ;;
            ghostscript) echo "  gs            (Ghostscript, for the EPS tests)" >&2 ;;
            fonts-dejavu-core) echo "  DejaVu fonts  ($dejavu, for the OCR tests' text images)" >&2 ;;
        esac
    done
    echo "install them with your system's package manager (Debian/Ubuntu: apt-get install ${missing[*]})" >&2
    exit 1
fi

sudo=()
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        sudo=(sudo)
    else
        echo "scripts/test-deps.sh: not root and no sudo: run as root: apt-get install ${missing[*]}" >&2
        exit 1
    fi
fi
# through env: sudo's env_reset would drop an exported DEBIAN_FRONTEND
apt=("${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get)
echo "+ ${apt[*]} update && ${apt[*]} install ${missing[*]}" >&2
"${apt[@]}" update -qq
if ! "${apt[@]}" install -y -qq "${missing[@]}" >/dev/null; then
    echo "scripts/test-deps.sh: apt-get could not install ${missing[*]}; install them by hand" >&2
    exit 1
fi
for prog in chromium chromedriver gs; do
    if ! command -v "$prog" >/dev/null 2>&1; then
        echo "scripts/test-deps.sh: $prog is still missing after apt-get install" >&2
        exit 1
    fi
done
if [ ! -e "$dejavu" ]; then
    echo "scripts/test-deps.sh: $dejavu is still missing after apt-get install" >&2
    exit 1
fi
