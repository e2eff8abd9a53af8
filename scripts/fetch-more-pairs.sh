#!/usr/bin/env bash
# scripts/fetch-more-pairs.sh CORPUS_DIR — executable pairs beyond ../shared/corpus/fetch.sh's, for the
# delta benchmark (scripts/delta-bench.sh). Patch releases of real binaries from PyPI's wheels and
# npm's tarballs; every wheel, tarball and extracted executable is checked against a pinned sha256,
# and the script fails on a mismatch.
#
# Pairs produced under CORPUS_DIR/pairs/<name>/{old,new}:
#   uv          static-pie Rust executable, x86-64, uv 0.5.10 -> 0.5.11
#   cmake       dynamically linked C++ executable (musl), x86-64, cmake 3.31.1 -> 3.31.2
#   ruff-arm64  static Rust executable, aarch64, ruff 0.8.3 -> 0.8.4
#   ninja       C++ executable, x86-64, ninja 1.11.1.git.kitware.jobserver-1 as packaged in 1.11.1.1 (manylinux1) and
#               in 1.11.1.3 (manylinux2010): one source rebuilt with another toolchain (glibc 2.5 -> 2.12)
# and, since 2026-12-06, shared libraries from manylinux wheels (Python extension modules):
#   pydantic        Rust, x86-64, pydantic-core 2.27.1 -> 2.27.2 (the new one 11 % smaller: rebuilt anew)
#   pydantic-arm64  Rust, AArch64, the same versions
#   orjson          Rust, x86-64, orjson 3.10.11 -> 3.10.12
#   rpds            Rust, x86-64, rpds-py 0.22.0 -> 0.22.3
#   regex           C, x86-64, regex 2024.9.11 -> 2024.11.6
# and, added later on 2026-12-06, executables and libraries of other toolchains, from npm and PyPI:
#   esbuild         Go, x86-64, static executable, @esbuild/linux-x64 0.24.0 -> 0.24.1 (npm)
#   esbuild-arm64   Go, AArch64, the same versions (@esbuild/linux-arm64)
#   biome           Rust, x86-64, PIE executable, @biomejs/cli-linux-x64 1.9.3 -> 1.9.4 (npm)
#   rollup          Rust, x86-64, Node addon, @rollup/rollup-linux-x64-gnu 4.28.0 -> 4.28.1 (npm)
#   lxml            Cython-generated C, x86-64, lxml.etree 5.3.0 -> 5.3.1
#   numpy           C, x86-64, numpy's _multiarray_umath 2.1.2 -> 2.1.3
# and, last on 2026-12-06, three more, measured only after the code they were measured with was written:
#   cryptography    Rust with OpenSSL linked in, x86-64, cryptography's _rust.abi3.so 44.0.0 -> 44.0.1
#   grpcio          C++ and Cython, x86-64, grpcio's cygrpc 1.68.0 -> 1.68.1 (same size, 74 % of bytes differ)
#   swc             Rust, x86-64, Node addon of 50 MB, @swc/core-linux-x64-gnu 1.9.2 -> 1.9.3 (npm)
# and, on 2026-12-06 (eighteenth pass), three more, measured after the scan's thresholds were chosen:
#   psutil          C, x86-64, psutil's _psutil_linux.abi3.so 6.1.0 -> 6.1.1 (115 KB: a delta of about 1 KB)
#   jiter           Rust, x86-64, jiter 0.8.0 -> 0.8.2
#   tokenizers      Rust, x86-64, tokenizers.abi3.so 0.21.0 -> 0.21.1 (9 MB)
# and, on 2026-12-07 (nineteenth pass), 32-bit code and Debian's own builds, measured after the
# x86-64 and AArch64 data-reference transforms were written:
#   pydantic-armv7  Rust, 32-bit Arm (Arm instruction set), pydantic-core 2.27.1 -> 2.27.2
#   orjson-armv7    Rust, 32-bit Arm, orjson 3.10.11 -> 3.10.12
#   jiter-armv7     Rust, 32-bit Arm, jiter 0.8.0 -> 0.8.2
#   libcrypto-armhf C (gcc, Thumb-2) and Arm assembly, Debian 12's libcrypto.so.3, openssl 3.0.20 -> 3.0.22
#   libcrypto-i386  C, 32-bit x86, the same versions
#   libcrypto-amd64 C, x86-64, the same versions
#   libxml2-armhf   C (gcc, Thumb-2), Debian 12's libxml2.so.2.9.14, 2.9.14+dfsg-1.3~deb12u4 -> ~deb12u6
# and, on 2026-12-07 (twenty-first pass), Debian 12's security and point-release updates, measured
# before anything was changed for them, each on amd64, arm64, armhf (Thumb-2) and i386:
#   expat[-ARCH]    C library, libexpat.so.1.8.10, 2.5.0-1+deb12u2 -> +deb12u5
#   curl[-ARCH]     C library, libcurl.so.4.8.0, 7.88.1-10+deb12u5 -> +deb12u15
#   ssh[-ARCH]      C executable, openssh-client's ssh, 1:9.2p1-2+deb12u9 -> +deb12u10
#   systemd[-ARCH]  C library, libsystemd.so.0.35.0, 252.38-1~deb12u1 -> 252.39-1~deb12u2
# and on amd64 only:
#   glib            C library, libglib-2.0.so.0.7400.6, 2.74.6-2+deb12u2 -> +deb12u9
#   python          C library, libpython3.11.so.1.0 (7.7 MB), 3.11.2-6+deb12u8 -> +deb12u9
# and, on 2026-12-07 (twenty-third pass), measured before anything was changed for them:
#   lefthook        Go, x86-64, static executable, lefthook 2.2.1 -> 2.2.2 (npm lefthook-linux-x64)
#   lefthook-arm64  Go, AArch64, the same versions (npm lefthook-linux-arm64)
#   buf-breaking    Go, x86-64, protoc-gen-buf-breaking (29 MB) of @bufbuild/buf-linux-x64 1.74.0 -> 1.75.0
#   rollup-armhf    Rust, 32-bit Arm Node addon, @rollup/rollup-linux-arm-gnueabihf 4.50.1 -> 4.50.2
#   rollup-arm64    Rust, AArch64 Node addon, @rollup/rollup-linux-arm64-gnu 4.50.1 -> 4.50.2
#   expat-ppc64el   C library on POWER (no transform applies), libexpat.so.1.8.10, +deb12u2 -> +deb12u5
#   esbuild-arm     Go, 32-bit Arm (Arm instruction set), static executable, @esbuild/linux-arm 0.24.0 -> 0.24.1
# and, on 2026-12-07 (twenty-fifth pass), measured before anything was changed for them:
#   sass-snapshot   Dart AOT snapshot (an ELF shared object of compiled Dart), x86-64, sass.snapshot of
#                   sass-embedded-linux-x64 1.83.0 -> 1.83.1 (npm; the Dart runtime beside it is unchanged)
#   lightningcss    Rust, x86-64, Node addon, lightningcss-linux-x64-gnu 1.28.1 -> 1.28.2 (npm)
#   oxide           Rust, x86-64, Node addon, @tailwindcss/oxide-linux-x64-gnu 4.0.0 -> 4.0.1 (npm)
# and, on 2026-12-07 (twenty-seventh pass), measured before anything was changed for them:
#   turbo           Rust, x86-64, static-pie executable, turbo-linux-64 2.8.16 -> 2.8.17 (npm)
#   turbo-arm64     Rust, AArch64, static executable, turbo-linux-arm64 2.8.16 -> 2.8.17 (npm)
#   maturin         Rust, x86-64, static-pie executable, maturin 1.12.4 -> 1.12.5 (PyPI)
#   parcel-watcher  C++, x86-64, Node addon, @parcel/watcher-linux-x64-glibc 2.5.4 -> 2.5.6 (npm)
#
# Needs: bash, python3, pip, curl, tar, sha256sum, dpkg-deb.
set -euo pipefail
OUT=${1:?usage: $0 CORPUS_DIR}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
DL="$OUT/dl-more"
mkdir -p "$DL"

log() { printf '[fetch-more-pairs] %s\n' "$*" >&2; }
check_sha() { # file expected
    local got
    got=$(sha256sum "$1" | cut -d' ' -f1)
    [ "$got" = "$2" ] || { log "SHA256 MISMATCH for $1: got $got expected $2"; exit 1; }
}

# wheel NAME VERSION PLATFORM SHA256 MEMBER DEST MEMBER_SHA256
wheel() {
    local name=$1 ver=$2 plat=$3 sha=$4 member=$5 dest=$6 msha=$7 d="$DL/$1-$2-$3"
    mkdir -p "$d" "$(dirname "$dest")"
    if ! ls "$d"/*.whl >/dev/null 2>&1; then
        # PIP_FIND_LINKS emptied so that a local wheel cache cannot substitute the file
        PIP_FIND_LINKS= python3 -m pip download -q --no-deps --no-cache-dir --only-binary=:all: \
            --platform "$plat" --python-version 3.12 -d "$d" "$name==$ver" >&2
    fi
    local whl
    whl=$(ls "$d"/*.whl)
    check_sha "$whl" "$sha"
    python3 - "$whl" "$member" "$dest" <<'EOF'
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, z.open(sys.argv[2]) as src, open(sys.argv[3], "wb") as dst:
    shutil.copyfileobj(src, dst)
EOF
    check_sha "$dest" "$msha"
}

# download URL FILE: unless FILE is there, fetched to a temporary name first, so that an
# interrupted download is fetched again, not kept
download() {
    [ -s "$2" ] && return 0
    curl -fsS -o "$2.part" "$1"
    mv "$2.part" "$2"
}

# npm SCOPE/NAME FILE VERSION SHA256 MEMBER DEST MEMBER_SHA256: one file of an npm package's tarball
npm_file() {
    local pkg=$1 file=$2 ver=$3 sha=$4 member=$5 dest=$6 msha=$7
    local t="$DL/npm-${pkg//\//_}-$ver.tgz"
    mkdir -p "$(dirname "$dest")"
    download "https://registry.npmjs.org/$pkg/-/$file-$ver.tgz" "$t"
    check_sha "$t" "$sha"
    tar -xzOf "$t" "$member" > "$dest"
    check_sha "$dest" "$msha"
}

# deb URL SHA256 MEMBER DEST MEMBER_SHA256: one file of a Debian package from deb.debian.org
deb() {
    local url=$1 sha=$2 member=$3 dest=$4 msha=$5
    local t="$DL/${url##*/}"
    mkdir -p "$(dirname "$dest")"
    download "$url" "$t"
    check_sha "$t" "$sha"
    dpkg-deb --fsys-tarfile "$t" | tar -xOf - "$member" > "$dest"
    check_sha "$dest" "$msha"
}

log "uv 0.5.10 -> 0.5.11 (x86-64, static-pie Rust)"
wheel uv 0.5.10 musllinux_1_1_x86_64 68a6b992b7ebae9f3fa2f395348c95e6f05745246b067a26e7597a6730fcb690 \
    uv-0.5.10.data/scripts/uv "$OUT/pairs/uv/old" a35cb5ffa7a8cb3367c658c8b92ea502ff6ba527bce887b2abbf0be3e95d3e32
wheel uv 0.5.11 musllinux_1_1_x86_64 398eb87ef23b0cd25a8bfcc0dddf0d360d92aba03f660962f447a6585ced440b \
    uv-0.5.11.data/scripts/uv "$OUT/pairs/uv/new" 328706ecdce23bf2ed2d7b9ad959a6a3f8aea712a4a4ba0b39dd1fb57d95965e

log "cmake 3.31.1 -> 3.31.2 (x86-64, C++)"
wheel cmake 3.31.1 musllinux_1_1_x86_64 585ef94540a99a7acbc7001721d5d897df2e80a549a05b17e660e8a813fc9cc1 \
    cmake/data/bin/cmake "$OUT/pairs/cmake/old" 4d2e4255ca2dc71cd07aee11a585fed48a9a1f554c36d3a27d4b52b2295b67f8
wheel cmake 3.31.2 musllinux_1_1_x86_64 fa3b23b8bd52c0ae9e3c6b635ac8ee70d8f35d24bacf39cc4cea22aec6e4ed84 \
    cmake/data/bin/cmake "$OUT/pairs/cmake/new" 341858f26dcc69781fff405f605e1696120e9d7f9a162aedb5f16237cebc5793

log "ruff 0.8.3 -> 0.8.4 (aarch64, static Rust)"
wheel ruff 0.8.3 musllinux_1_2_aarch64 5be450bb18f23f0edc5a4e5585c17a56ba88920d598f04a06bd9fd76d324cb20 \
    ruff-0.8.3.data/scripts/ruff "$OUT/pairs/ruff-arm64/old" 92a81128fc371b4936d52ef4a29f9ae40c1e34d514564eae54652b6dda5f62e2
wheel ruff 0.8.4 musllinux_1_2_aarch64 13e9ec6d6b55f6da412d59953d65d66e760d583dd3c1c72bf1f26435b5bfdbae \
    ruff-0.8.4.data/scripts/ruff "$OUT/pairs/ruff-arm64/new" d6bc537c9a2557aab581f3557e5964d208515b33682e8d02a71819d94de0a21c
log "ninja 1.11.1.1 -> 1.11.1.3 (x86-64, C++: one source rebuilt on a newer toolchain)"
wheel ninja 1.11.1.1 manylinux1_x86_64 84502ec98f02a037a169c4b0d5d86075eaf6afc55e1879003d6cab51ced2ea4b \
    ninja/data/bin/ninja "$OUT/pairs/ninja/old" 68f6c375c4234305bff9790aa232815b38924390cbb6ad4987ea0f94ad2bc410
wheel ninja 1.11.1.3 manylinux2010_x86_64 a27e78ca71316c8654965ee94b286a98c83877bfebe2607db96897bbfe458af0 \
    ninja-1.11.1.3.data/scripts/ninja "$OUT/pairs/ninja/new" 94f5318756260447ffb88d0bc31b67dbc07119f1dc0c8dc2cb58ea575a471025
log "pydantic-core 2.27.1 -> 2.27.2 (x86-64 and aarch64, Rust shared library)"
wheel pydantic_core 2.27.1 manylinux_2_17_x86_64 7597c07fbd11515f654d6ece3d0e4e5093edc30a436c63142d9a4b8e22f19c35 \
    pydantic_core/_pydantic_core.cpython-312-x86_64-linux-gnu.so "$OUT/pairs/pydantic/old" 5a9544460a5e53eeffbcaadd861f6e6fe9d7add56c634b92c7929612a007c88b
wheel pydantic_core 2.27.2 manylinux_2_17_x86_64 6fb4aadc0b9a0c063206846d603b92030eb6f03069151a625667f982887153e2 \
    pydantic_core/_pydantic_core.cpython-312-x86_64-linux-gnu.so "$OUT/pairs/pydantic/new" 1e507537f1ec89253b6a9b6f3de13782b1d5766b5307864445c48915db41699e
wheel pydantic_core 2.27.1 manylinux_2_17_aarch64 15aae984e46de8d376df515f00450d1522077254ef6b7ce189b38ecee7c9677c \
    pydantic_core/_pydantic_core.cpython-312-aarch64-linux-gnu.so "$OUT/pairs/pydantic-arm64/old" decc2fcd6348b54a650775814a59fb436d9fe90df74957e5428c7eb0ae382fd5
wheel pydantic_core 2.27.2 manylinux_2_17_aarch64 172fce187655fece0c90d90a678424b013f8fbb0ca8b036ac266749c09438cb7 \
    pydantic_core/_pydantic_core.cpython-312-aarch64-linux-gnu.so "$OUT/pairs/pydantic-arm64/new" fe8d1f27cc8df7a8913b716cd89127ef270d81a628bde81cb49eb3d90caf7ac4
log "orjson 3.10.11 -> 3.10.12 (x86-64, Rust shared library)"
wheel orjson 3.10.11 manylinux_2_17_x86_64 e2f3b7c5803138e67028dde33450e054c87e0703afbe730c105f1fcd873496d5 \
    orjson/orjson.cpython-312-x86_64-linux-gnu.so "$OUT/pairs/orjson/old" e300bef24f589078bd168172cdf4d90d24ba3e8c049ffb21863bd3e7d0250c76
wheel orjson 3.10.12 manylinux_2_17_x86_64 910fdf2ac0637b9a77d1aad65f803bac414f0b06f720073438a7bd8906298192 \
    orjson/orjson.cpython-312-x86_64-linux-gnu.so "$OUT/pairs/orjson/new" 867c47b681cc99145f1ba3c159ee04deb583a1314b2826ad24a5540b236ad4f8
log "rpds-py 0.22.0 -> 0.22.3 (x86-64, Rust shared library)"
wheel rpds_py 0.22.0 manylinux_2_17_x86_64 b91bfef5daa2a5a4fe62f8d317fc91a626073639f951f851bd2cb252d01bc6c5 \
    rpds/rpds.cpython-312-x86_64-linux-gnu.so "$OUT/pairs/rpds/old" aadbdafcb1809e1726c027291e630b6179dfe6b62c5092f160e3fa6769c500ac
wheel rpds_py 0.22.3 manylinux_2_17_x86_64 e67ba3c290821343c192f7eae1d8fd5999ca2dc99994114643e2f2d3e6138b15 \
    rpds/rpds.cpython-312-x86_64-linux-gnu.so "$OUT/pairs/rpds/new" 7ba3475f9d9e551707fc8b670e2733dbcb8e14d30dd092fb6989914b09a3cc1e
log "regex 2024.9.11 -> 2024.11.6 (x86-64, C shared library)"
wheel regex 2024.9.11 manylinux_2_17_x86_64 85ab7824093d8f10d44330fe1e6493f756f252d145323dd17ab6b48733ff6c0a \
    regex/_regex.cpython-312-x86_64-linux-gnu.so "$OUT/pairs/regex/old" cfdc655628dfef5e1a2d68b35db2b7eb1edee02f9f89cd01cbe6381f4aeed6c0
wheel regex 2024.11.6 manylinux_2_17_x86_64 70b7fa6606c2881c1db9479b0eaa11ed5dfa11c8d60a474ff0e095099f39d98e \
    regex/_regex.cpython-312-x86_64-linux-gnu.so "$OUT/pairs/regex/new" 36ea51e7710ff839e2ca6be3da3ed7150a6cc4d0d6aff5501d08aa05e1494462
log "esbuild 0.24.0 -> 0.24.1 (x86-64 and aarch64, Go executable)"
npm_file @esbuild/linux-x64 linux-x64 0.24.0 e7ed3f09090b864987027411d34b6b522b2090d83c811f712033e07a587d2275 \
    package/bin/esbuild "$OUT/pairs/esbuild/old" 8367cdb8aa8069785db9a37da1f5cdcea5c28c449509020a85b4c54e53a37353
npm_file @esbuild/linux-x64 linux-x64 0.24.1 5b99b53f4e00b980f612bb126246ee4e859b958171668dfef691f4bb6404124a \
    package/bin/esbuild "$OUT/pairs/esbuild/new" f3d7d426598d8fbb0d3cdaa9da52586f5580411a0040648cf0a2d020d4d545ec
npm_file @esbuild/linux-arm64 linux-arm64 0.24.0 5098151a97fadd7e3c43e38a4ad922f679400359deef396ac8b6db7759a5d403 \
    package/bin/esbuild "$OUT/pairs/esbuild-arm64/old" 7288683360edb081cf2ea238a7b0015ac33e764301dedf5e86aa4ec186a6f7c8
npm_file @esbuild/linux-arm64 linux-arm64 0.24.1 d5bc7743e65e121d13fb1eefc62910b35f7a3264df01e458abdd58e5d9d9eded \
    package/bin/esbuild "$OUT/pairs/esbuild-arm64/new" b7b29cfbd316c7c7c079eeb233e3cb3518171c271319cb7c8001d212808dcfaf
log "biome 1.9.3 -> 1.9.4 (x86-64, Rust executable)"
npm_file @biomejs/cli-linux-x64 cli-linux-x64 1.9.3 6f2bdfc3d62979ba2b5b0a052f9a807d4be3feb457932c49154f2091f51be34b \
    package/biome "$OUT/pairs/biome/old" 8486c25c33530f69f87cf8f7c36f61800b1068d768bf92de11f08a89e451985a
npm_file @biomejs/cli-linux-x64 cli-linux-x64 1.9.4 3e38f0368640ac9d25cca30199a4070ee6179f330d9f0f432aac6e21020269d7 \
    package/biome "$OUT/pairs/biome/new" ce247fb644999ef52e5111dd6fd6e471019669fc9c4a44b5699721e39b7032c3
log "rollup 4.28.0 -> 4.28.1 (x86-64, Rust Node addon)"
npm_file @rollup/rollup-linux-x64-gnu rollup-linux-x64-gnu 4.28.0 559fd30080b004fa93c55dbefd68a7e8ee297437cfac0074cf03d94343f229a7 \
    package/rollup.linux-x64-gnu.node "$OUT/pairs/rollup/old" 2a33b2b1f1aeb74dbb2af14fdd46a35381db6446b0c09db2c481bbe4dfe035bd
npm_file @rollup/rollup-linux-x64-gnu rollup-linux-x64-gnu 4.28.1 b2a7e67bec05bbd111bcfd165412ad17671f2b4f458e052792ea58a1a7644f7c \
    package/rollup.linux-x64-gnu.node "$OUT/pairs/rollup/new" 7d3ebcb5464630282803b763f028fbf05442c275e21c6302590b4732f77c080e
log "lxml 5.3.0 -> 5.3.1 (x86-64, Cython-generated C shared library)"
wheel lxml 5.3.0 manylinux_2_28_x86_64 3879cc6ce938ff4eb4900d901ed63555c778731a96365e53fadb36437a131a99 \
    lxml/etree.cpython-312-x86_64-linux-gnu.so "$OUT/pairs/lxml/old" 4ce605720278ba97392545eac6e50e71cdd48cb677a3ee07b6d0757663ab5462
wheel lxml 5.3.1 manylinux_2_28_x86_64 d184f85ad2bb1f261eac55cddfcf62a70dee89982c978e92b9a74a1bfef2e367 \
    lxml/etree.cpython-312-x86_64-linux-gnu.so "$OUT/pairs/lxml/new" 2864a9e456af92848672eb9a0e512fb46d71e8b6906bdb5be6b141877389262c
log "numpy 2.1.2 -> 2.1.3 (x86-64, C shared library)"
wheel numpy 2.1.2 manylinux_2_17_x86_64 6d95f286b8244b3649b477ac066c6906fbb2905f8ac19b170e2175d3d799f4df \
    numpy/_core/_multiarray_umath.cpython-312-x86_64-linux-gnu.so "$OUT/pairs/numpy/old" d6e22a218c41b67d6d77f87da7eaa38cd676a78554e9edf46484798d447a90dc
wheel numpy 2.1.3 manylinux_2_17_x86_64 2312b2aa89e1f43ecea6da6ea9a810d06aae08321609d8dc0d0eda6d946a541b \
    numpy/_core/_multiarray_umath.cpython-312-x86_64-linux-gnu.so "$OUT/pairs/numpy/new" a94d3fe5be076987c4fa70d063f06364933b7d3c96edb0d92fff3750551d30fe
log "cryptography 44.0.0 -> 44.0.1 (x86-64, Rust with OpenSSL, shared library)"
wheel cryptography 44.0.0 manylinux_2_17_x86_64 404fdc66ee5f83a1388be54300ae978b2efd538018de18556dde92575e05defc \
    cryptography/hazmat/bindings/_rust.abi3.so "$OUT/pairs/cryptography/old" cc4aa0cb54b2a6d1099a850dcdd377ac3527cd49119bf0c648f9ed8e551b19c5
wheel cryptography 44.0.1 manylinux_2_17_x86_64 1e8d181e90a777b63f3f0caa836844a1182f1f265687fac2115fcf245f5fbec3 \
    cryptography/hazmat/bindings/_rust.abi3.so "$OUT/pairs/cryptography/new" b057f51e6f3932e36a956fdf6a9e9de1e9088b994ad79f66c783fc9454e83403
log "grpcio 1.68.0 -> 1.68.1 (x86-64, C++ and Cython shared library)"
wheel grpcio 1.68.0 manylinux_2_17_x86_64 e0d30f3fee9372796f54d3100b31ee70972eaadcc87314be369360248a3dcffe \
    grpc/_cython/cygrpc.cpython-312-x86_64-linux-gnu.so "$OUT/pairs/grpcio/old" cfea8eac7a4bba69bb833092010324f18bfd0f09965924a6113eb76c1e10bb0e
wheel grpcio 1.68.1 manylinux_2_17_x86_64 95c87ce2a97434dffe7327a4071839ab8e8bffd0054cc74cbe971fba98aedd60 \
    grpc/_cython/cygrpc.cpython-312-x86_64-linux-gnu.so "$OUT/pairs/grpcio/new" f3d13258889033d5fbc9102732a42aab4390cd3ca669beec1a6319e1ae875318
log "swc 1.9.2 -> 1.9.3 (x86-64, Rust Node addon)"
npm_file @swc/core-linux-x64-gnu core-linux-x64-gnu 1.9.2 71a119787750d98026e0a8702ff2f07d940aa20b12e17f4e8cfa5fc0bad2e321 \
    package/swc.linux-x64-gnu.node "$OUT/pairs/swc/old" b35b39f4aff4b26a0a6fac5dcdfb52395ffe38efc9ed91eb951d5382e74b6418
npm_file @swc/core-linux-x64-gnu core-linux-x64-gnu 1.9.3 3d3adebe001aa567ea9f546dc2d85522b609e2db153ae4c5754d50baf80ed99e \
    package/swc.linux-x64-gnu.node "$OUT/pairs/swc/new" 398d2d910b7064b5baccde8bd2656ea1db09e6e334ce34dbc6dac60e3c8a18ca
log "psutil 6.1.0 -> 6.1.1 (x86-64, C shared library)"
wheel psutil 6.1.0 manylinux_2_17_x86_64 498c6979f9c6637ebc3a73b3f87f9eb1ec24e1ce53a7c5173b8508981614a90b \
    psutil/_psutil_linux.abi3.so "$OUT/pairs/psutil/old" 5154b4be684ed796e198727ec940b86eb9d52d610d183d5d0a1bdf448bf57f32
wheel psutil 6.1.1 manylinux_2_17_x86_64 97f7cb9921fbec4904f522d972f0c0e1f4fabbdd4e0287813b21215074a0f160 \
    psutil/_psutil_linux.abi3.so "$OUT/pairs/psutil/new" 2d76b01666546f2806089d6f4ef08f005db0bb410d893a54d463a7b0f8b727e2
log "jiter 0.8.0 -> 0.8.2 (x86-64, Rust shared library)"
wheel jiter 0.8.0 manylinux_2_17_x86_64 e7d6363d4c6f1052b1d8b494eb9a72667c3ef5f80ebacfe18712728e85327000 \
    jiter/jiter.cpython-312-x86_64-linux-gnu.so "$OUT/pairs/jiter/old" 3ab284922d278693019649aae9cc4b97056b1a3470c9895866ddeca63d6f27bc
wheel jiter 0.8.2 manylinux_2_17_x86_64 14601dcac4889e0a1c75ccf6a0e4baf70dbc75041e51bcf8d0e9274519df6887 \
    jiter/jiter.cpython-312-x86_64-linux-gnu.so "$OUT/pairs/jiter/new" c488b8ac58a92e05fc5f71039800e6e388a84dfc68dc89f93b5c953858da2c38
log "tokenizers 0.21.0 -> 0.21.1 (x86-64, Rust shared library)"
wheel tokenizers 0.21.0 manylinux_2_17_x86_64 e84ca973b3a96894d1707e189c14a774b701596d579ffc7e69debfc036a61a04 \
    tokenizers/tokenizers.abi3.so "$OUT/pairs/tokenizers/old" b8f7b59958ef21415c5e43f2ca293495c80e8cf4f72ca953b40393b8385900dd
wheel tokenizers 0.21.1 manylinux_2_17_x86_64 2dd9a0061e403546f7377df940e866c3e678d7d4e9643d0461ea442b4f89e61a \
    tokenizers/tokenizers.abi3.so "$OUT/pairs/tokenizers/new" 900d9f22a3606b6c47a090215dfc2ab096508569d6362a47a22d24670b79c8ff
log "pydantic-core, orjson, jiter (32-bit Arm, Rust shared libraries)"
wheel pydantic_core 2.27.1 manylinux_2_17_armv7l 1ba5e3963344ff25fc8c40da90f44b0afca8cfd89d12964feb79ac1411a260ac \
    pydantic_core/_pydantic_core.cpython-312-arm-linux-gnueabihf.so "$OUT/pairs/pydantic-armv7/old" 2ea065b72049db0ee44b941e1ea63cc4e35d252838e2c6e6332d3a3a0909bb40
wheel pydantic_core 2.27.2 manylinux_2_17_armv7l 519f29f5213271eeeeb3093f662ba2fd512b91c5f188f3bb7b27bc5973816934 \
    pydantic_core/_pydantic_core.cpython-312-arm-linux-gnueabihf.so "$OUT/pairs/pydantic-armv7/new" 010ca7994166904189d469528a253a11b309be3f2fc9b1eb424e57cec6230fbd
wheel orjson 3.10.11 manylinux_2_17_armv7l 7dfa8db55c9792d53c5952900c6a919cfa377b4f4534c7a786484a6a4a350c19 \
    orjson/orjson.cpython-312-arm-linux-gnueabihf.so "$OUT/pairs/orjson-armv7/old" e55130338e2b81e005238added864e7621111ca26770c0ccaa5b28cbc9a02658
wheel orjson 3.10.12 manylinux_2_17_armv7l ed459b46012ae950dd2e17150e838ab08215421487371fa79d0eced8d1461d70 \
    orjson/orjson.cpython-312-arm-linux-gnueabihf.so "$OUT/pairs/orjson-armv7/new" f3ba7963109bfadcac3c12704042a61d2d085fc12c684cf9fbfb38614c4ca62b
wheel jiter 0.8.0 manylinux_2_17_armv7l e13fa849c0e30643554add089983caa82f027d69fad8f50acadcb21c462244ab \
    jiter/jiter.cpython-312-arm-linux-gnueabihf.so "$OUT/pairs/jiter-armv7/old" 88e7c2523e5a8aba3e415490343bf70697d8919bb4b23de3fe108c0e9d3b97bb
wheel jiter 0.8.2 manylinux_2_17_armv7l 025337859077b41548bdcbabe38698bcd93cfe10b06ff66617a48ff92c9aec60 \
    jiter/jiter.cpython-312-arm-linux-gnueabihf.so "$OUT/pairs/jiter-armv7/new" 5bfaa9af0cc79add9cbd06e0cf034791772beb28a2785a086cbd2fb9b54ab2b6

# Debian 12's builds: the older version from the main archive, the newer from the security archive.
# A point release can move or drop them; the checksums then fail loudly.
DEB=http://deb.debian.org/debian/pool/main
SEC=http://deb.debian.org/debian-security/pool/updates/main
log "libcrypto.so.3, openssl 3.0.20 -> 3.0.22 (Debian 12: armhf, i386, amd64)"
deb "$DEB/o/openssl/libssl3_3.0.20-1%7edeb12u2_armhf.deb" 8e7bfa25f6be0b5b0257e093ffad36f6ccb72f51ead97d8b7e78fafac59184a4 \
    ./usr/lib/arm-linux-gnueabihf/libcrypto.so.3 "$OUT/pairs/libcrypto-armhf/old" 2c9c1de99ba7597f2c523aded827740dc8394299f241e34f2cb46afd6f895558
deb "$SEC/o/openssl/libssl3_3.0.22-1%7edeb12u2_armhf.deb" 811951e24996e0205aac131a96cb2b62ebf3dcc21dfaa75be1706eb46f7183e6 \
    ./usr/lib/arm-linux-gnueabihf/libcrypto.so.3 "$OUT/pairs/libcrypto-armhf/new" 70413cc668293198c54fcc627e8045d3dbd8302d741b2d5f8c528a5f99d50ebb
deb "$DEB/o/openssl/libssl3_3.0.20-1%7edeb12u2_i386.deb" dd62209dd6c12bb9240f4fab882b7d4e16e7d5f00f31304b8d9c35c5d431b662 \
    ./usr/lib/i386-linux-gnu/libcrypto.so.3 "$OUT/pairs/libcrypto-i386/old" b6b8ce7a946260c1610833b711d74d9faf7ea0bed976db03e2922117ea88501a
deb "$SEC/o/openssl/libssl3_3.0.22-1%7edeb12u2_i386.deb" a385b698131fcaeb2e5c1337c9c459b8cc076a85428870341546e5856eebda9a \
    ./usr/lib/i386-linux-gnu/libcrypto.so.3 "$OUT/pairs/libcrypto-i386/new" a067eb676359656b9dcae2676f24419bcd5bd3fa40f2e7e546eccc3961c2b396
deb "$DEB/o/openssl/libssl3_3.0.20-1%7edeb12u2_amd64.deb" 89be24b41bff568ee6e7caf5680a3d808e80315ed92e407056ce0fa7a5bda025 \
    ./usr/lib/x86_64-linux-gnu/libcrypto.so.3 "$OUT/pairs/libcrypto-amd64/old" 72db1b3de8b7dfbaba4c056135f408da555f9d5e137c82129478e07e769f8070
deb "$SEC/o/openssl/libssl3_3.0.22-1%7edeb12u2_amd64.deb" cb4784740daa9b3b0eaea2b444bbefa686794afbbf3d678d238c1fd9875f2efd \
    ./usr/lib/x86_64-linux-gnu/libcrypto.so.3 "$OUT/pairs/libcrypto-amd64/new" aa01e614af634bc7c8b678c9250b5c4f613c61989bacf0a5d6aed6570e7dcabd
log "libxml2.so.2.9.14, Debian 12 ~deb12u4 -> ~deb12u6 (armhf)"
deb "$SEC/libx/libxml2/libxml2_2.9.14%2bdfsg-1.3%7edeb12u4_armhf.deb" 98fbee10e8601e6c7614404409393da9b048f4f2477f94014caa8cf231ed7c67 \
    ./usr/lib/arm-linux-gnueabihf/libxml2.so.2.9.14 "$OUT/pairs/libxml2-armhf/old" 7a7a5785aac1a9d0b72f12ae309490e629c4c43dcf6ddbc3866941efc884e087
deb "$DEB/libx/libxml2/libxml2_2.9.14%2bdfsg-1.3%7edeb12u6_armhf.deb" fc424bafeacaa07084c9f7ebc2b3801d60b3295a6f958860e68a3ebd334d1a6a \
    ./usr/lib/arm-linux-gnueabihf/libxml2.so.2.9.14 "$OUT/pairs/libxml2-armhf/new" 82b2def94261c7981498162e9537ccb68e9d97f97c69047b72e719f6d15faba9
log "Debian 12 patch releases (2026-12-07, issue 15 twenty-first pass): expat, curl, ssh, systemd on amd64, arm64, armhf, i386; glib and libpython on amd64"
deb "$DEB/e/expat/libexpat1_2.5.0-1%2bdeb12u2_amd64.deb" 2255e62fc22a86d2c544b8a3f516da9aee19383ad5742722ab4ce7f66a30dbc8 \
    ./lib/x86_64-linux-gnu/libexpat.so.1.8.10 "$OUT/pairs/expat/old" a9a60cb5308ca1054427e2973b021ea63c2c801c71d8c0dc9d33218fee1d976a
deb "$SEC/e/expat/libexpat1_2.5.0-1%2bdeb12u5_amd64.deb" cae5ded666d8573dd33060bc66fbac21eea8b101a6b56e2af8bd590fcfa65d79 \
    ./lib/x86_64-linux-gnu/libexpat.so.1.8.10 "$OUT/pairs/expat/new" b342d94f6a71df596f19b1b0d4d3af9b883f0333027de6c3fc0dbc9ff8c45057
deb "$DEB/e/expat/libexpat1_2.5.0-1%2bdeb12u2_arm64.deb" 8dc1976735acf825e3a922d82f171e20feec7394da2b8c616091983e38706275 \
    ./lib/aarch64-linux-gnu/libexpat.so.1.8.10 "$OUT/pairs/expat-arm64/old" 4da3eb8010076d0c9ca494ca3d7a179d1697093ceb7fdc05ca701bb2a4359fff
deb "$SEC/e/expat/libexpat1_2.5.0-1%2bdeb12u5_arm64.deb" 4a733e7f636de4a4483e3e5d7b02dc8e788b115361a04dd58df89461ce2ae65a \
    ./lib/aarch64-linux-gnu/libexpat.so.1.8.10 "$OUT/pairs/expat-arm64/new" 704ed6621816d4570afa0c7690956545b446487f3e9c62934976bf4d4cff999c
deb "$DEB/e/expat/libexpat1_2.5.0-1%2bdeb12u2_armhf.deb" e1cbf8b00e34295cd92865747abf80999218b6511ddc68daffd6b0e5f9fe0d63 \
    ./lib/arm-linux-gnueabihf/libexpat.so.1.8.10 "$OUT/pairs/expat-armhf/old" e5956fdb60d60ea87aebe5c2701b007897f869a4a77e2942471b6de562c7d3dd
deb "$SEC/e/expat/libexpat1_2.5.0-1%2bdeb12u5_armhf.deb" 50fd618113a1871dd868fb59cba2ec84a754fef57ca619a468d502be717d4532 \
    ./lib/arm-linux-gnueabihf/libexpat.so.1.8.10 "$OUT/pairs/expat-armhf/new" 876a7d839f80c94f76dfd919b529e87c61d3ba93bf0cd2af890ea8a45897551b
deb "$DEB/e/expat/libexpat1_2.5.0-1%2bdeb12u2_i386.deb" 002fa75e3acfa317aee466c83e4f709db027d25110d2c548fd9483e196e3659d \
    ./lib/i386-linux-gnu/libexpat.so.1.8.10 "$OUT/pairs/expat-i386/old" 853b9be8a17df1e8beec7686b2b3eb3aef46b9648741e2610e9d217ecd530473
deb "$SEC/e/expat/libexpat1_2.5.0-1%2bdeb12u5_i386.deb" 4d9bc59aadad4a94846a84043a9511ea8e56626f93efd4a9c1d07f707652d1d8 \
    ./lib/i386-linux-gnu/libexpat.so.1.8.10 "$OUT/pairs/expat-i386/new" 8b7114d70d03b712b44a0d77aa39bd653de57dc0e3e51cd39b545552e88768dd
deb "$SEC/c/curl/libcurl4_7.88.1-10%2bdeb12u5_amd64.deb" 619b592d51c0e75be0b153dbb671e732739d306bf22f42f8e1bc103235299f0d \
    ./usr/lib/x86_64-linux-gnu/libcurl.so.4.8.0 "$OUT/pairs/curl/old" e49ffc8219d9c2c152ad2f691f14bffd5af3c5f1f65f717411a6d79249f15ad5
deb "$DEB/c/curl/libcurl4_7.88.1-10%2bdeb12u15_amd64.deb" 3042904de01f9c4fbdcf1452b8f81abedcf2b015f9b9deba109063322b5bd68b \
    ./usr/lib/x86_64-linux-gnu/libcurl.so.4.8.0 "$OUT/pairs/curl/new" 02fbea31e63cd827ee61644851f1d336de6850a7df0f7af30ba74da97c4b99ab
deb "$SEC/c/curl/libcurl4_7.88.1-10%2bdeb12u5_arm64.deb" c6120503e8a7328cafed86e8c6843af486433620eb8a8213eee4629fc0f39fbb \
    ./usr/lib/aarch64-linux-gnu/libcurl.so.4.8.0 "$OUT/pairs/curl-arm64/old" 0063e7c43da9701104fa500c2d4cc071168902c585cd7855126fb11c2ddaae90
deb "$DEB/c/curl/libcurl4_7.88.1-10%2bdeb12u15_arm64.deb" e54bdd269c960b643ded903c3dbde36fe5d4d5f5b6389b47a0344d4a711cf70a \
    ./usr/lib/aarch64-linux-gnu/libcurl.so.4.8.0 "$OUT/pairs/curl-arm64/new" b2128021983c1df51cf676c81ce56c2e5fa116393d8c2a645ca13595efece2f6
deb "$SEC/c/curl/libcurl4_7.88.1-10%2bdeb12u5_armhf.deb" c3ebd19337537727666ae367b0f889efd9a92d8e538470bfbdfc5217cc217293 \
    ./usr/lib/arm-linux-gnueabihf/libcurl.so.4.8.0 "$OUT/pairs/curl-armhf/old" fb73da633c1ad3b02c888615af4fc3a17b50f13e6c8238a4221d765b0c03db15
deb "$DEB/c/curl/libcurl4_7.88.1-10%2bdeb12u15_armhf.deb" aac8588c1f16b5f2712f83905dd3f1c18fa4eb30ee77aaa39767d358ffbc7672 \
    ./usr/lib/arm-linux-gnueabihf/libcurl.so.4.8.0 "$OUT/pairs/curl-armhf/new" e1ef8654abd9568cbb92bf69700b8eb2ce458362f030f6b4ebd93bd45b8d0699
deb "$SEC/c/curl/libcurl4_7.88.1-10%2bdeb12u5_i386.deb" c292a6067110fc17af098abc00c4c5a58dd1506ee0d0f95f3f0592bb2eace9c1 \
    ./usr/lib/i386-linux-gnu/libcurl.so.4.8.0 "$OUT/pairs/curl-i386/old" e8ea142603f2c7dbd9b75e95d31d8458bf98596a239f693a6da7c0b4f52d4d9b
deb "$DEB/c/curl/libcurl4_7.88.1-10%2bdeb12u15_i386.deb" 29e3dc308078ecf8ef9a714f08d227ec7eeae93b48bf30ef2e5322153658b0b0 \
    ./usr/lib/i386-linux-gnu/libcurl.so.4.8.0 "$OUT/pairs/curl-i386/new" b3350a2cdbfb8b0278f8ee5252f9cad6b3736afaed6fb71e5e9a86297b3ed1ed
deb "$SEC/o/openssh/openssh-client_9.2p1-2%2bdeb12u9_amd64.deb" 3159b10a9416169926edcdf4daddf16ac71fb56bc4a952d2a73754cc6741c053 \
    ./usr/bin/ssh "$OUT/pairs/ssh/old" 6048acfcfd0c01d390f151da4cc4b214f72e4cab97968393c5ea17284bdf62f4
deb "$DEB/o/openssh/openssh-client_9.2p1-2%2bdeb12u10_amd64.deb" 42c250b8b9110382488c53c066a960bc564ddac2cb9e449f47b6cdbb5fc1cb60 \
    ./usr/bin/ssh "$OUT/pairs/ssh/new" 04f2ff5f506a3f332e7adeb1478a4c551ae74acdd328e6fb5c2495664d4064e6
deb "$SEC/o/openssh/openssh-client_9.2p1-2%2bdeb12u9_arm64.deb" 8058f41696f15d1c8046d3ba7c0959c6385fde5a86385ddb32ca7cbd83644797 \
    ./usr/bin/ssh "$OUT/pairs/ssh-arm64/old" d20902bbbdbd7355b98998fbe3b336a3017343022b12ac5c8766539b2a616041
deb "$DEB/o/openssh/openssh-client_9.2p1-2%2bdeb12u10_arm64.deb" 72f7cb7eb432038a62cd89e0552b352a514e880fe3907e73dc50ca2ef6d088d7 \
    ./usr/bin/ssh "$OUT/pairs/ssh-arm64/new" 78e7a4963fe15f37f40b5e700bbfcda1831e1978ac32bf3a2ee4d200cce255fe
deb "$SEC/o/openssh/openssh-client_9.2p1-2%2bdeb12u9_armhf.deb" 0f451939a4df9d01fc3af49a6225dbf4be4b5c54adbd7a6ce7c5d19861115ec9 \
    ./usr/bin/ssh "$OUT/pairs/ssh-armhf/old" 7a6eb2b05ffe170132e0ec9d35353101a827fb37100cac9695d5e6a67cde7163
deb "$DEB/o/openssh/openssh-client_9.2p1-2%2bdeb12u10_armhf.deb" 11ccc88f685ba2425be9d5dc9ff16a2e34bdec7e92fb673244f257b33edcd979 \
    ./usr/bin/ssh "$OUT/pairs/ssh-armhf/new" 0d4cadbf8548a483eb4c8534ed10546dabee3d7db0124be8e664b4676fdce5d9
deb "$SEC/o/openssh/openssh-client_9.2p1-2%2bdeb12u9_i386.deb" 52571162cee50a60c9581434329da8c39ed9b673627df3551e120b4f4154d13f \
    ./usr/bin/ssh "$OUT/pairs/ssh-i386/old" c037cbd156fc75b11075b5267fc051c8552c574acc8db3f8b894e30ada4a6926
deb "$DEB/o/openssh/openssh-client_9.2p1-2%2bdeb12u10_i386.deb" df876e63ccac80f2391f715fcf691bbc5d921d8d0c7458f446a36b01b43019b8 \
    ./usr/bin/ssh "$OUT/pairs/ssh-i386/new" 8da667bb5b1adb7f48de42244f641beaba0d4b8ddcfc3d8efb333afdeea76e06
deb "$SEC/s/systemd/libsystemd0_252.38-1%7edeb12u1_amd64.deb" a77825fd9043c5e01c65aea2f7893b30749f98501da681f861517ab255ad80e2 \
    ./usr/lib/x86_64-linux-gnu/libsystemd.so.0.35.0 "$OUT/pairs/systemd/old" 1875dcc77e67b512719857c8aa0671a888064587a4d0818d3d1ace93ab0349d6
deb "$DEB/s/systemd/libsystemd0_252.39-1%7edeb12u2_amd64.deb" 013c07514a9e4933b2d5c098018695a6aa42d085dbc483ce2c094a954c8a1b0a \
    ./usr/lib/x86_64-linux-gnu/libsystemd.so.0.35.0 "$OUT/pairs/systemd/new" 3880319ae776b622ad3c89201984065905d10271f78ef3a4db2ee0604a61256b
deb "$SEC/s/systemd/libsystemd0_252.38-1%7edeb12u1_arm64.deb" f9442b58d7824b4ee4a618619e4a88b1ac8567671ef403fc85c86071b29301c7 \
    ./usr/lib/aarch64-linux-gnu/libsystemd.so.0.35.0 "$OUT/pairs/systemd-arm64/old" 46b0aa16f6510c2dad892227ef9200b1be5f92c063b5423a5ef48f3c23c48148
deb "$DEB/s/systemd/libsystemd0_252.39-1%7edeb12u2_arm64.deb" 293ab474b90276dae9ebc03ed01e622e0c1f2578e83ed3aa926ae1eaf84dda9c \
    ./usr/lib/aarch64-linux-gnu/libsystemd.so.0.35.0 "$OUT/pairs/systemd-arm64/new" e38e0c11131d330c9a49a4a7f9437f8cf9d6a198355a47ecff02bc4aabe52171
deb "$SEC/s/systemd/libsystemd0_252.38-1%7edeb12u1_armhf.deb" b8f275f9c0c5de1706415bfaaa04bbd9635b41b09a8ab09c1e5d9552a5d5b3be \
    ./usr/lib/arm-linux-gnueabihf/libsystemd.so.0.35.0 "$OUT/pairs/systemd-armhf/old" 326386670e8651586b7f58d9d0ac9bba824e81010720cce0f45d6a7ca94e07d5
deb "$DEB/s/systemd/libsystemd0_252.39-1%7edeb12u2_armhf.deb" fe49d9caa76c1ebc90210936c3aa85aeb6e9bb283d4128b825519887117fdb4d \
    ./usr/lib/arm-linux-gnueabihf/libsystemd.so.0.35.0 "$OUT/pairs/systemd-armhf/new" f9353a4325e5525cde7e82ec919dad7d4dfb30d50e96c19d99f998692ebe1301
deb "$SEC/s/systemd/libsystemd0_252.38-1%7edeb12u1_i386.deb" 8d3e3d324e7bf6a4efa9233246ef6fc74be7d2fa79d7155fa62cea13697c0884 \
    ./usr/lib/i386-linux-gnu/libsystemd.so.0.35.0 "$OUT/pairs/systemd-i386/old" 65622892e267ab623944c75d34c463c182ff4b41e277d5e93f9e434b0421b415
deb "$DEB/s/systemd/libsystemd0_252.39-1%7edeb12u2_i386.deb" 0b28141a9c39a6be717b1e561d61cf8301a740182f480a246d4664e3aec52a41 \
    ./usr/lib/i386-linux-gnu/libsystemd.so.0.35.0 "$OUT/pairs/systemd-i386/new" 23fb42e3174bab3e3c1adf5327b3aaf78fe7c3c348f47db279216117a87aacf5
deb "$SEC/g/glib2.0/libglib2.0-0_2.74.6-2%2bdeb12u2_amd64.deb" 8462c5d2350bcaa5f98aeaf40ef85d96260e4c48aa65a8e5c210d9d0f79788e5 \
    ./usr/lib/x86_64-linux-gnu/libglib-2.0.so.0.7400.6 "$OUT/pairs/glib/old" 05ca3bc463a6d97d3ce27d9a8baf9dad2b8a8ec11eecf61c6cb26307d3b424bf
deb "$DEB/g/glib2.0/libglib2.0-0_2.74.6-2%2bdeb12u9_amd64.deb" 7ff85197685d89e150e342b29a59aab1beee400050ba7da73de81cd999ffee5a \
    ./usr/lib/x86_64-linux-gnu/libglib-2.0.so.0.7400.6 "$OUT/pairs/glib/new" 1708487c60fb32855e9d4aec503f0c32dcb74c6834a839e015ccbd27a606a879
deb "$DEB/p/python3.11/libpython3.11_3.11.2-6%2bdeb12u8_amd64.deb" 63845d53d5f64d2362cfb6007ec175ad1c6044cebe60a1885eff76d2ce637c35 \
    ./usr/lib/x86_64-linux-gnu/libpython3.11.so.1.0 "$OUT/pairs/python/old" d7b4b5bd699711828204fe1a966c737bfd2d708d1c18febf0253f6f3aa8ba139
deb "$SEC/p/python3.11/libpython3.11_3.11.2-6%2bdeb12u9_amd64.deb" 5737023cb469c012203bc6f4e6f522459d7561be499a69139df278785ec62129 \
    ./usr/lib/x86_64-linux-gnu/libpython3.11.so.1.0 "$OUT/pairs/python/new" 4283b6fabf8d8e8e5d031fdbb32beaa1b0f38e54846224df962a068d2406d6ed
log "Go executables for x86-64 and 32- and 64-bit Arm, Rust addons for 32- and 64-bit Arm, POWER (2026-12-07, issue 15 twenty-third pass)"
npm_file lefthook-linux-x64 lefthook-linux-x64 2.2.1 6b4af8f753dc1d69f803d2ad774507bb3dc44f22c444d521f625066c36c3ccfb \
    package/bin/lefthook "$OUT/pairs/lefthook/old" 4cfe773de735e62cf574ade601207a6fe8b6c987aa515f4a2ffa0d146857d9cd
npm_file lefthook-linux-x64 lefthook-linux-x64 2.2.2 8af2a644313118781cccf6d6a0e5c858086f11fbcc9df8daf3464ac9d0509c80 \
    package/bin/lefthook "$OUT/pairs/lefthook/new" 7771d6243018b445bb83dd3c9b12dffd92a6067a3958f21d984bb389d8dbbc58
npm_file lefthook-linux-arm64 lefthook-linux-arm64 2.2.1 cd88d3bd282a8c3366fe76d5819712f49854cbe8afa99c5f9d67b961dc629dbb \
    package/bin/lefthook "$OUT/pairs/lefthook-arm64/old" 784f60c3156a1eb2a40de17140cfbd1dca0b7081aa59ccbc25352914866b20b1
npm_file lefthook-linux-arm64 lefthook-linux-arm64 2.2.2 a511f5f52d0983d0f9bb57de6a9ecb263b09381fa40ed68029c17b6252a13480 \
    package/bin/lefthook "$OUT/pairs/lefthook-arm64/new" 08fb1bfbc40c8ecd16b6fa1ff4590da31b255d70883776eaf5b0e9f46f80416f
npm_file @bufbuild/buf-linux-x64 buf-linux-x64 1.74.0 bdac2d18f11bbb8bd2e8780a83de84d0f80e2b244c823df9cee32c957afa4a51 \
    package/bin/protoc-gen-buf-breaking "$OUT/pairs/buf-breaking/old" 3c648017ff6128b7e757dcb2a172bcf2253d7fb724a4ebae8210d5ca6f954432
npm_file @bufbuild/buf-linux-x64 buf-linux-x64 1.75.0 98b19d4b2b46130e083157490c54dfdcb8ea771e53204d3c6a06a2b12edd0503 \
    package/bin/protoc-gen-buf-breaking "$OUT/pairs/buf-breaking/new" 369ea71da6054161c53f0d447099e4b87652f6593dc7df44778e71f85423cdce
npm_file @rollup/rollup-linux-arm-gnueabihf rollup-linux-arm-gnueabihf 4.50.1 ae74adc4a4b646cebce5aa6d43ace8e64c559bcef759789ccc71d72d02e1e324 \
    package/rollup.linux-arm-gnueabihf.node "$OUT/pairs/rollup-armhf/old" 52b8edaa768c91a3b860dd215913eb26161396d668255ce3848f86dbf7fd91a9
npm_file @rollup/rollup-linux-arm-gnueabihf rollup-linux-arm-gnueabihf 4.50.2 25545317cb706f814ed8476e4f532122420d3791eea34ab272b95cbec0c7495b \
    package/rollup.linux-arm-gnueabihf.node "$OUT/pairs/rollup-armhf/new" 009975dd5b4089921e3140ba61674b67646b30053051a6acfde4f7a2641138ca
npm_file @rollup/rollup-linux-arm64-gnu rollup-linux-arm64-gnu 4.50.1 c7d10a8803225f64425ad6f74bab7faf1166ab6a66859a83b9093bfb5631365d \
    package/rollup.linux-arm64-gnu.node "$OUT/pairs/rollup-arm64/old" d31692ec2936d9e4883d9d944a33ed0a6f0e8627a8356eaad4c1d2e2a4992542
npm_file @rollup/rollup-linux-arm64-gnu rollup-linux-arm64-gnu 4.50.2 6bf149ffa8c1f4de105edc482acd90b2c0b26a83c8983a09b156e0b78b852b8a \
    package/rollup.linux-arm64-gnu.node "$OUT/pairs/rollup-arm64/new" e7b87ea1abf7072f5123cea05a73d4a6cb3d1fdc8ee93a831443bdf041bcd962
deb "$DEB/e/expat/libexpat1_2.5.0-1%2bdeb12u2_ppc64el.deb" 6c1247b4dc5c4f3a5a508c0995139e08faf08cce2d25820af15ef47c6dde26f7 \
    ./lib/powerpc64le-linux-gnu/libexpat.so.1.8.10 "$OUT/pairs/expat-ppc64el/old" 437f2e85a1f2abf4c6376746555e8cf1c9b11525196b5c4851f5c337d130242c
deb "$SEC/e/expat/libexpat1_2.5.0-1%2bdeb12u5_ppc64el.deb" ee5bf78754aef331a44ec1a86878e2a1ae8ef620e7bbd6274b7076989daee743 \
    ./lib/powerpc64le-linux-gnu/libexpat.so.1.8.10 "$OUT/pairs/expat-ppc64el/new" ea14e7b05371f3357a039aa240616fc9b21be91e2a36e7e2d7aa6273e37e536c
npm_file @esbuild/linux-arm linux-arm 0.24.0 73a51d07ad4fba8a076a63600a2bd34a433f76b21ecfd3739bd3a336e285453a \
    package/bin/esbuild "$OUT/pairs/esbuild-arm/old" 24f4d254104c6c239f31e3029b6999cfe4efeec26c546686fae5f6094cf363af
npm_file @esbuild/linux-arm linux-arm 0.24.1 1e12cbd59127f98f315018adf80f037246a571718a7d0c2b11dc46e664abe598 \
    package/bin/esbuild "$OUT/pairs/esbuild-arm/new" 3664f024204dac001a41bc60a9296891c6b29ae51731abcd57870a1b1d50606b
log "a Dart AOT snapshot and two Rust Node addons (2026-12-07, issue 15 twenty-fifth pass)"
npm_file sass-embedded-linux-x64 sass-embedded-linux-x64 1.83.0 2cdc3a4402344d536433b2c438a6bd29cbd0cf67b678c5deead45b84fa062915 \
    package/dart-sass/src/sass.snapshot "$OUT/pairs/sass-snapshot/old" 940c630a54eff10a248339cfab713c2169e0a6ee8e9f8d983b525f8ab5929fc2
npm_file sass-embedded-linux-x64 sass-embedded-linux-x64 1.83.1 b254d701ceb81eea345d9613624b4cb0277123f1df66526121a8795cf3629f7a \
    package/dart-sass/src/sass.snapshot "$OUT/pairs/sass-snapshot/new" 1f0a115ef56faa38fef0d737aa188b91b3f6ed576dc30f0b18812a489eda58f2
npm_file lightningcss-linux-x64-gnu lightningcss-linux-x64-gnu 1.28.1 fb17628367f5376be700f472b2ba88e0fa29835777d67e1b97ed4ef23230ea59 \
    package/lightningcss.linux-x64-gnu.node "$OUT/pairs/lightningcss/old" dd1d20ca70ddd538447b19cb8c27a9a9f50f7ac9dc461d0d15a01c51e537b67c
npm_file lightningcss-linux-x64-gnu lightningcss-linux-x64-gnu 1.28.2 67ad6e171ba17d01166daba7ad3b6931ad9a7ddeeb123e892382ee7de1d6ebe6 \
    package/lightningcss.linux-x64-gnu.node "$OUT/pairs/lightningcss/new" 3e24c7e47b9762218d8aac64b9eb857dac1886d33bd96e103c89c31b6c606d35
npm_file @tailwindcss/oxide-linux-x64-gnu oxide-linux-x64-gnu 4.0.0 33a4de45eafbec657080311e24f2ef31f4817cff2639d92acfee30263cd17fd2 \
    package/tailwindcss-oxide.linux-x64-gnu.node "$OUT/pairs/oxide/old" 177f55d8a5408daebcd08019defab76230369d0efa5db84f0a2a1e2efa20ed81
npm_file @tailwindcss/oxide-linux-x64-gnu oxide-linux-x64-gnu 4.0.1 a4d7d88f16c1fe48536a8be2ed5f53afba2f6062eb0db133adee87c5d191680a \
    package/tailwindcss-oxide.linux-x64-gnu.node "$OUT/pairs/oxide/new" 1fb15505fb98e440cb87783823120b53767a73af587f19ca4fb8452df3abc24e
log "four more, measured before anything was changed for them (2026-12-07, issue 15 twenty-seventh pass)"
npm_file turbo-linux-64 turbo-linux-64 2.8.16 411459f04b0258b7c9da537b88495e402e9d512f95b848c5c62ad9358a8eb773 \
    turbo-linux-x64/bin/turbo "$OUT/pairs/turbo/old" 7b80fbff6b5c9acdfebb3581f983b7dc0d554854863344c09ce1b41bbeb738f2
npm_file turbo-linux-64 turbo-linux-64 2.8.17 dcb1bac57f5745503defe968dc23780b2ad986615c2a4c9a44439061eb10753a \
    turbo-linux-x64/bin/turbo "$OUT/pairs/turbo/new" 8082ad2e3a3bfe615388f5768e738c49b380faa20e32ea9784122646f46b89f8
npm_file turbo-linux-arm64 turbo-linux-arm64 2.8.16 34fa8f201b351bc4319427d9ad2d6f2f75bd2efca621727c0febb0c3f4ded954 \
    turbo-linux-arm64/bin/turbo "$OUT/pairs/turbo-arm64/old" c3260a0740cdf4e1a27fa3143e4719305f8d83217baeb6207095f236ebbca59b
npm_file turbo-linux-arm64 turbo-linux-arm64 2.8.17 8b20bfcd34adfbe8fb670653571b87947c882ee850c56969ebf6cd7d63a8192b \
    turbo-linux-arm64/bin/turbo "$OUT/pairs/turbo-arm64/new" 58626aebc544517633aacb0443f23d8e2c3bb6a03a6117b09e6e2ce25e13b590
wheel maturin 1.12.4 manylinux_2_12_x86_64 88e09e6c386b08974fab0c7e4c07d7c7c50a0ba63095d31e930d80568488e1be \
    maturin-1.12.4.data/scripts/maturin "$OUT/pairs/maturin/old" 7984d2c852be9a47c78b84e471a7c8bf6e66b14b20924b47c7aaab33061fd1d2
wheel maturin 1.12.5 manylinux_2_12_x86_64 ed59f6a24a9b107a2812b8c0ef48a0f0abddcfa18e120dd028bfc8fa2883ff2c \
    maturin-1.12.5.data/scripts/maturin "$OUT/pairs/maturin/new" 1fa09b292f86244176b7c90dc6728aa7354caffc498131e0e51127f80195b5ec
npm_file @parcel/watcher-linux-x64-glibc watcher-linux-x64-glibc 2.5.4 b4427c5aee7f7b0d4eab2b0e7b9cccb4fd9db113cff1673e9ac49742a12d929a \
    package/watcher.node "$OUT/pairs/parcel-watcher/old" fd71c9bc1ec933f37ec6ca7aa194275d5fbb069e6ba18bae0d7fe04e3a886f74
npm_file @parcel/watcher-linux-x64-glibc watcher-linux-x64-glibc 2.5.6 43eed2f56c7b33d32172cf79513e807b4588ecc4e05d53a306d78fc6c356a42e \
    package/watcher.node "$OUT/pairs/parcel-watcher/new" f5a86a5231fb33c6c1830649eafd2c9e72647edb45aad753148d08cee6a42dea
log "done: $OUT/pairs/{uv,cmake,ruff-arm64,ninja,pydantic,pydantic-arm64,orjson,rpds,regex,esbuild,esbuild-arm64,biome,rollup,lxml,numpy,cryptography,grpcio,swc,psutil,jiter,tokenizers,pydantic-armv7,orjson-armv7,jiter-armv7,libcrypto-armhf,libcrypto-i386,libcrypto-amd64,libxml2-armhf,expat,expat-arm64,expat-armhf,expat-i386,curl,curl-arm64,curl-armhf,curl-i386,ssh,ssh-arm64,ssh-armhf,ssh-i386,systemd,systemd-arm64,systemd-armhf,systemd-i386,glib,python,lefthook,lefthook-arm64,buf-breaking,rollup-armhf,rollup-arm64,expat-ppc64el,esbuild-arm,sass-snapshot,lightningcss,oxide,turbo,turbo-arm64,maturin,parcel-watcher}"
